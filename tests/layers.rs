//! Level 0 (no adapter): the layer rule of the crate docs, checked. The `# Layers` table of
//! `src/lib.rs` is parsed (module → layer number), then every `crate::` path in `src/**/*.rs`
//! (`use crate::a::b`, `use crate::{a, b::{c, d}}` over several lines, `crate::a::f()` in
//! expressions, and the root re-exports such as `crate::Tensor`, read from `src/lib.rs`); the test
//! fails naming the file, the line and both modules when a module imports a higher layer.
//! Comments are skipped (a doc link is not an import); `#[cfg(test)]` code is checked too.
//!
//! Three finer rules the table states in words are checked the same way (see `NARROWER`).

use std::collections::BTreeMap;
use std::path::Path;

/// (importer, imported, the one sub-module it may use, or None for nothing at all).
const NARROWER: &[(&str, &str, Option<&str>)] = &[
    // The oracle shares no code with what it checks: only the plain op configs.
    ("reference", "ops", Some("config")),
    // data is host-only: no GPU module at all.
    ("data", "gpu", None),
    ("data", "tensor", None),
    ("data", "autograd", None),
    ("data", "ops", None),
    ("data", "nn", None),
    ("data", "models", None),
    ("data", "optim", None),
    // The DRR layer does not read files through data (pretrain joins the two).
    ("drr", "data", None),
];

/// Module → layer, from the `# Layers` table of the crate docs (rows `| n | `a`, `b` | … |`).
fn parse_layer_table(lib_rs: &str) -> Result<BTreeMap<String, usize>, String> {
    let section = lib_rs
        .split("//! # Layers")
        .nth(1)
        .ok_or("src/lib.rs has no `//! # Layers` section")?;
    let mut layers = BTreeMap::new();
    for line in section.lines().skip(1) {
        let Some(row) = line.strip_prefix("//!") else {
            break;
        };
        let row = row.trim();
        if row.starts_with('#') {
            break; // the next section
        }
        if !row.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        let Ok(level) = cells[0].parse::<usize>() else {
            continue; // header and separator rows
        };
        let modules = cells
            .get(1)
            .ok_or(format!("layer row without modules: {row}"))?;
        for name in modules.split(',') {
            let name = name.trim().trim_matches('`').to_string();
            if let Some(prev) = layers.insert(name.clone(), level) {
                return Err(format!(
                    "`{name}` is in the layer table twice ({prev} and {level})"
                ));
            }
        }
    }
    if layers.is_empty() {
        return Err("the `# Layers` table of src/lib.rs has no rows".into());
    }
    Ok(layers)
}

/// Root re-exports of `src/lib.rs` (`pub use tensor::Tensor;`, `pub use error::{Error, Result};`):
/// item → module, so `crate::Tensor` counts as an import of `tensor`.
fn parse_root_exports(lib_rs: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in lib_rs.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let rest = rest.trim_end_matches(';');
        let Some((module, items)) = rest.split_once("::") else {
            continue;
        };
        let items = items.trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            // `a::B` exports B; `B as C` exports C.
            let item = item.trim();
            let name = item.rsplit([' ', ':']).next().unwrap_or(item);
            if !name.is_empty() {
                out.insert(name.to_string(), module.to_string());
            }
        }
    }
    out
}

/// The source with comments blanked out (same length, newlines kept, so offsets map to lines).
/// String literals are kept as they are ("//" inside a string would end the scan of that line
/// early, which only ever hides a path, never invents one).
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut in_block = 0usize;
    let bytes = src.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &src[i..];
        if in_block > 0 {
            if rest.starts_with("*/") {
                in_block -= 1;
                out.push_str("  ");
                i += 2;
            } else if rest.starts_with("/*") {
                in_block += 1;
                out.push_str("  ");
                i += 2;
            } else {
                let c = rest.chars().next().unwrap();
                out.push(if c == '\n' { '\n' } else { ' ' });
                i += c.len_utf8();
            }
        } else if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            out.extend(std::iter::repeat_n(' ', rest[..end].chars().count()));
            i += end;
        } else if rest.starts_with("/*") {
            in_block = 1;
            out.push_str("  ");
            i += 2;
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A leaf path: (offset of its first segment, segments after `crate::`).
type Leaf = (usize, Vec<String>);

/// Parse a use-tree at `s[*pos..]` (after `crate::`), pushing every leaf path with the offset of
/// its first segment (so a path inside a multi-line group reports its own line).
/// Grammar: tree := ident ("as" ident)? ("::" (tree | "{" tree ("," tree)* ","? "}"))?
fn parse_tree(
    s: &str,
    pos: &mut usize,
    prefix: &mut Vec<String>,
    first_at: usize,
    out: &mut Vec<Leaf>,
) {
    let skip_ws = |pos: &mut usize| {
        while s[*pos..].starts_with(char::is_whitespace) {
            *pos += s[*pos..].chars().next().unwrap().len_utf8();
        }
    };
    skip_ws(pos);
    if s[*pos..].starts_with('{') {
        *pos += 1;
        loop {
            skip_ws(pos);
            if s[*pos..].starts_with('}') || *pos >= s.len() {
                *pos = (*pos + 1).min(s.len());
                return;
            }
            let at = if prefix.is_empty() { *pos } else { first_at };
            parse_tree(s, pos, &mut prefix.clone(), at, out);
            skip_ws(pos);
            if s[*pos..].starts_with(',') {
                *pos += 1;
            }
        }
    }
    let start = *pos;
    while s[*pos..].starts_with(is_ident) {
        *pos += s[*pos..].chars().next().unwrap().len_utf8();
    }
    let ident = &s[start..*pos];
    if ident.is_empty() {
        if !prefix.is_empty() {
            out.push((first_at, prefix.clone()));
        }
        return;
    }
    if ident != "self" {
        prefix.push(ident.to_string());
    }
    skip_ws(pos);
    if s[*pos..].starts_with("as ") {
        *pos += 3;
        skip_ws(pos);
        while s[*pos..].starts_with(is_ident) {
            *pos += s[*pos..].chars().next().unwrap().len_utf8();
        }
        skip_ws(pos);
    }
    if s[*pos..].starts_with("::") {
        *pos += 2;
        parse_tree(s, pos, prefix, first_at, out);
    } else {
        out.push((first_at, prefix.clone()));
    }
}

/// (line, path segments after `crate::`) of every crate path in a source file.
fn crate_paths(src: &str) -> Vec<(usize, Vec<String>)> {
    let code = strip_comments(src);
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find("crate::") {
        let at = from + found;
        from = at + "crate::".len();
        if code[..at].ends_with(is_ident) {
            continue; // e.g. `my_crate::`
        }
        let mut pos = from;
        let mut leaves = Vec::new();
        parse_tree(&code, &mut pos, &mut Vec::new(), from, &mut leaves);
        for (offset, segments) in leaves {
            out.push((code[..offset].matches('\n').count() + 1, segments));
        }
    }
    out
}

/// Every violation of the table (and of `narrower`) in `files` = (display path, module, source).
fn check(
    layers: &BTreeMap<String, usize>,
    roots: &BTreeMap<String, String>,
    narrower: &[(&str, &str, Option<&str>)],
    files: &[(String, String, String)],
) -> Vec<String> {
    let mut errors = Vec::new();
    for (path, module, src) in files {
        let Some(&own) = layers.get(module) else {
            errors.push(format!(
                "{path}: module `{module}` is not in the layer table of src/lib.rs"
            ));
            continue;
        };
        for (line, segments) in crate_paths(src) {
            let first = &segments[0];
            let target = if layers.contains_key(first) {
                first.clone()
            } else if let Some(m) = roots.get(first) {
                m.clone()
            } else {
                errors.push(format!(
                    "{path}:{line}: `crate::{}` is neither a module of the layer table nor a root \
                     re-export of src/lib.rs",
                    segments.join("::")
                ));
                continue;
            };
            if target == *module {
                continue;
            }
            let theirs = layers[&target];
            if theirs > own {
                errors.push(format!(
                    "{path}:{line}: `{module}` (layer {own}) imports `{target}` (layer {theirs}), \
                     a higher layer: `crate::{}`",
                    segments.join("::")
                ));
            }
            for (importer, imported, only) in narrower {
                if importer == module && *imported == target {
                    let sub = if target == *first {
                        segments.get(1).map(String::as_str)
                    } else {
                        None
                    };
                    if only.is_none() || sub != *only {
                        errors.push(format!(
                            "{path}:{line}: `{module}` may import {} of `{target}`, got \
                             `crate::{}`",
                            match only {
                                Some(o) => format!("only `{target}::{o}`"),
                                None => "nothing".to_string(),
                            },
                            segments.join("::")
                        ));
                    }
                }
            }
        }
    }
    errors
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_module_imports_a_higher_layer() {
    // CADS_LAYERS_ROOT checks another checkout (e.g. an old commit exported with `git archive`)
    // against its own src/lib.rs table.
    let root = std::env::var("CADS_LAYERS_ROOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf());
    let root = root.as_path();
    let src = root.join("src");
    let lib_rs = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let layers = parse_layer_table(&lib_rs).unwrap_or_else(|e| panic!("{e}"));
    let roots = parse_root_exports(&lib_rs);
    let mut files = Vec::new();
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    for p in paths {
        let rel = p.strip_prefix(root).unwrap();
        let under_src = p.strip_prefix(&src).unwrap();
        let first = under_src.components().next().unwrap().as_os_str();
        let first = first.to_str().unwrap();
        if first == "lib.rs" || first == "main.rs" {
            continue;
        }
        let module = first.trim_end_matches(".rs").to_string();
        let text = std::fs::read_to_string(&p).unwrap();
        files.push((rel.display().to_string(), module, text));
    }
    assert!(files.len() > 50, "found only {} source files", files.len());
    let errors = check(&layers, &roots, NARROWER, &files);
    assert!(
        errors.is_empty(),
        "{} layer violation(s) (the table is in src/lib.rs, # Layers):\n{}",
        errors.len(),
        errors.join("\n")
    );
}

const TABLE: &str = "//! # Layers
//!
//! | layer | modules | what |
//! |---|---|---|
//! | 0 | `error` | errors |
//! | 1 | `low`, `low2` | one layer |
//! | 2 | `high` | above |
//!
//! # Next section
//! | 9 | `not_a_layer` | |
pub use low::Thing;
pub use error::{Error, Result};
";

fn files(list: &[(&str, &str)]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|(path, src)| {
            let module = path
                .trim_start_matches("src/")
                .split(['/', '.'])
                .next()
                .unwrap();
            (path.to_string(), module.to_string(), src.to_string())
        })
        .collect()
}

/// The checker itself, on a synthetic tree: it must fail, naming file, line and both modules.
#[test]
fn checker_names_file_line_and_modules_of_an_upward_import() {
    let layers = parse_layer_table(TABLE).unwrap();
    assert_eq!(layers.len(), 4, "{layers:?}");
    assert_eq!(layers["low2"], 1);
    assert!(!layers.contains_key("not_a_layer"));
    let roots = parse_root_exports(TABLE);
    assert_eq!(roots["Thing"], "low");
    assert_eq!(roots["Result"], "error");

    let tree = files(&[
        (
            "src/low/mod.rs",
            "//! Doc: see [`crate::high::X`] (a link, not an import).\n\
             use crate::error::Result;\n\
             use crate::low2::Peer; // same layer: fine\n\
             use crate::{\n    error::Error,\n    high::{a, b as c},\n};\n\
             fn f() { /* crate::high::g() */ }\n",
        ),
        (
            "src/low2.rs",
            "fn g() -> crate::Result<()> { crate::high::h() }\n",
        ),
        (
            "src/high/deep/x.rs",
            "use crate::low::{self, Thing};\nuse crate::Thing;\n",
        ),
    ]);
    let errors = check(&layers, &roots, &[], &tree);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors[0].starts_with("src/low/mod.rs:6: `low` (layer 1) imports `high` (layer 2)"),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("crate::high::a"), "{}", errors[0]);
    assert!(errors[1].contains("crate::high::b"), "{}", errors[1]);
    assert!(
        errors[2].starts_with("src/low2.rs:1: `low2` (layer 1) imports `high` (layer 2)"),
        "{}",
        errors[2]
    );

    // A module missing from the table and an unknown root item are errors too.
    let errors = check(
        &layers,
        &roots,
        &[],
        &files(&[("src/stray.rs", ""), ("src/low2.rs", "use crate::Nowhere;")]),
    );
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].contains("`stray` is not in the layer table"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].starts_with("src/low2.rs:1: `crate::Nowhere`"),
        "{}",
        errors[1]
    );
}

#[test]
fn checker_applies_the_narrower_rules() {
    let layers = parse_layer_table(TABLE).unwrap();
    let roots = parse_root_exports(TABLE);
    let narrower = [("high", "low", Some("config")), ("high", "low2", None)];
    let tree = files(&[(
        "src/high.rs",
        "use crate::low::config::Conv;\nuse crate::low::kernels::K;\nuse crate::Thing;\n\
         use crate::low2;\n",
    )]);
    let errors = check(&layers, &roots, &narrower, &tree);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].starts_with("src/high.rs:2: `high` may import only `low::config`"));
    // A root re-export does not say which sub-module it comes from: not the allowed one.
    assert!(errors[1].starts_with("src/high.rs:3:"), "{}", errors[1]);
    assert!(errors[2].starts_with("src/high.rs:4: `high` may import nothing of `low2`"));
}
