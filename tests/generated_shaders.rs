//! Level 0 (no adapter): generated shader code equals what its generator writes today.
//!
//! The unrolled kernels in `shaders/matmul*.wgsl` and `shaders/conv3d_igemm.wgsl` and the
//! `BEGIN GENERATED … END GENERATED` sections of the other conv3d shaders are written by
//! `scripts/gen_*.py`. Each script is run here with `--out-dir` into a fresh temporary folder
//! (plain python3, no packages) and its output compared byte for byte with the committed file, so
//! an edit to either side alone fails CI with the first differing line and the command that
//! regenerates the file.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (generator script, shader files it writes).
const GENERATORS: &[(&str, &[&str])] = &[
    (
        "gen_matmul_wgsl.py",
        &[
            "matmul.wgsl",
            "matmul_vec4.wgsl",
            "matmul_vec4_sga.wgsl",
            "matmul_f16_vec4.wgsl",
        ],
    ),
    (
        "gen_matmul_tiled.py",
        &["matmul_tiled.wgsl", "matmul_subgroup.wgsl"],
    ),
    ("gen_conv3d_tiled.py", &["conv3d.wgsl"]),
    (
        "gen_conv3d_backward_weight.py",
        &["conv3d_backward_weight.wgsl"],
    ),
    ("gen_conv3d_igemm.py", &["conv3d_igemm.wgsl"]),
    (
        "gen_conv3d_rows.py",
        &["conv3d_rows.wgsl", "conv3d_rows_sga.wgsl"],
    ),
    (
        "gen_matmul_coop.py",
        &["matmul_f16_coop8.wgsl", "matmul_f16_coop16.wgsl"],
    ),
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A temporary folder removed on drop (no tempfile dependency for one folder).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "cads-generated-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `None` when equal, else the first differing line (1-based) with both sides.
fn first_difference(committed: &str, generated: &str) -> Option<String> {
    if committed == generated {
        return None;
    }
    let (mut c, mut g) = (
        committed.split_inclusive('\n'),
        generated.split_inclusive('\n'),
    );
    let mut line = 1;
    loop {
        match (c.next(), g.next()) {
            (Some(a), Some(b)) if a == b => line += 1,
            (a, b) => {
                let show =
                    |s: Option<&str>| s.map_or("<end of file>".to_string(), |s| format!("{s:?}"));
                return Some(format!(
                    "line {line}:\n  committed: {}\n  generated: {}",
                    show(a),
                    show(b)
                ));
            }
        }
    }
}

#[test]
fn generated_shaders_match_their_generators() {
    let mut failures = Vec::new();
    for (script, files) in GENERATORS {
        let out = TempDir::new(script.trim_end_matches(".py"));
        let script_path = repo().join("scripts").join(script);
        let regenerate = format!("python3 scripts/{script}");
        let run = Command::new("python3")
            .arg(&script_path)
            .arg("--out-dir")
            .arg(&out.0)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run python3 (needed to check generated shaders; no packages): {e}")
            });
        assert!(
            run.status.success(),
            "{regenerate} --out-dir DIR failed ({}):\n{}",
            run.status,
            String::from_utf8_lossy(&run.stderr)
        );
        for file in *files {
            let committed = std::fs::read_to_string(repo().join("shaders").join(file)).unwrap();
            let generated = std::fs::read_to_string(out.0.join(file))
                .unwrap_or_else(|e| panic!("{script} did not write {file}: {e}"));
            if let Some(diff) = first_difference(&committed, &generated) {
                failures.push(format!(
                    "shaders/{file} differs from the output of scripts/{script} at {diff}\n  \
                     edit the script, not the shader, then run: {regenerate}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn first_difference_names_the_line_and_both_sides() {
    assert_eq!(first_difference("a\nb\n", "a\nb\n"), None);
    assert_eq!(
        first_difference("a\nb\nc\n", "a\nx\nc\n").unwrap(),
        "line 2:\n  committed: \"b\\n\"\n  generated: \"x\\n\""
    );
    assert_eq!(
        first_difference("a\n", "a\nb\n").unwrap(),
        "line 2:\n  committed: <end of file>\n  generated: \"b\\n\""
    );
}
