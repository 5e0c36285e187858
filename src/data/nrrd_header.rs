//! NRRD header text and geometry for [`super::nrrd`]: the field lines, the `space directions` /
//! `space origin` vectors, and the RAS affine they make (the math is in `nrrd.rs`'s module doc).

// Matrix code reads best with explicit row/column indices.
#![allow(clippy::needless_range_loop)]

use super::nrrd::bad;
use super::volume::{spacing_of, Affine, IDENTITY};
use crate::error::Result;

/// The header fields the reader uses.
#[derive(Debug, Default)]
pub(super) struct Header {
    pub(super) fields: Vec<(String, String)>,
    /// Byte offset of the attached data (just past the blank line ending the header).
    pub(super) data_offset: usize,
}

impl Header {
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Split the header text of `bytes` into fields. Field names are lower-cased and their inner
/// spaces kept ("space directions"); `key:=value` pairs and `#` comments are skipped.
pub(super) fn parse_header(bytes: &[u8], name: &str) -> Result<Header> {
    if !bytes.starts_with(b"NRRD000") {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(8)]).into_owned();
        return Err(bad(
            name,
            format!("bad magic {shown:?}, expected \"NRRD0001\" … \"NRRD0005\"; not a NRRD file"),
        ));
    }
    let mut h = Header::default();
    let mut pos = 0usize;
    let mut first = true;
    loop {
        let Some(nl) = bytes[pos..].iter().position(|&c| c == b'\n') else {
            // A header that ends without a newline: a detached header's last line, or a file cut
            // inside its header.
            let line = &bytes[pos..];
            if !line.is_empty() {
                add_field(&mut h, line, name)?;
            }
            h.data_offset = bytes.len();
            return Ok(h);
        };
        let line = &bytes[pos..pos + nl];
        pos += nl + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if first {
            first = false;
            continue; // the magic line
        }
        if line.is_empty() {
            h.data_offset = pos;
            return Ok(h);
        }
        add_field(&mut h, line, name)?;
    }
}

fn add_field(h: &mut Header, line: &[u8], name: &str) -> Result<()> {
    if line.starts_with(b"#") {
        return Ok(());
    }
    let text = std::str::from_utf8(line).map_err(|_| {
        bad(
            name,
            format!(
                "header line is not text: {:?}",
                String::from_utf8_lossy(&line[..line.len().min(60)])
            ),
        )
    })?;
    // Field names never hold a ':'; the first one decides: ":=" opens a key/value pair
    // (free-form metadata, skipped), ": " a field.
    let Some(colon) = text.find(':') else {
        return Err(bad(
            name,
            format!(
                "header line {text:?} is neither \"field: value\", \"key:=value\" nor a comment"
            ),
        ));
    };
    let (k, rest) = text.split_at(colon);
    if rest.starts_with(":=") {
        return Ok(());
    }
    let v = rest[1..].strip_prefix(' ').ok_or_else(|| {
        bad(
            name,
            format!("header line {text:?}: a field needs \": \" (colon and space) after its name"),
        )
    })?;
    h.fields
        .push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    Ok(())
}

/// Parse `(a,b,c)` into a 3-vector; `none` gives None.
fn parse_vector(s: &str, name: &str, field: &str) -> Result<Option<[f64; 3]>> {
    let s = s.trim();
    if s == "none" {
        return Ok(None);
    }
    let inner = s
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| {
            bad(
                name,
                format!("{field}: expected a vector \"(x,y,z)\", got {s:?}"),
            )
        })?;
    let parts: Vec<&str> = inner.split(',').collect();
    if parts.len() != 3 {
        return Err(bad(
            name,
            format!("{field}: expected 3 components (space dimension 3), got {s:?}"),
        ));
    }
    let mut v = [0.0; 3];
    for (o, p) in v.iter_mut().zip(&parts) {
        *o = p
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| {
                bad(
                    name,
                    format!("{field}: component {p:?} of {s:?} is not a finite number"),
                )
            })?;
    }
    Ok(Some(v))
}

/// Split "(a,b,c) (d,e,f) none" into its vector tokens.
fn vector_tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth -= 1;
                cur.push(c);
                if depth == 0 {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c if c.is_whitespace() && depth == 0 => {
                if !cur.trim().is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                cur.clear();
            }
            c => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

/// The sign of each world axis to go from the NRRD `space` to RAS.
fn space_to_ras(space: &str, name: &str) -> Result<[f64; 3]> {
    Ok(match space.trim().to_ascii_lowercase().as_str() {
        "right-anterior-superior" | "ras" => [1.0, 1.0, 1.0],
        "left-anterior-superior" | "las" => [-1.0, 1.0, 1.0],
        "left-posterior-superior" | "lps" => [-1.0, -1.0, 1.0],
        // DICOM's patient frame and ITK's physical space are LPS; "scanner-xyz" is the scanner's
        // own frame, which for the CT scanners NRRD is written from coincides with DICOM's LPS.
        "scanner-xyz" => [-1.0, -1.0, 1.0],
        other => {
            return Err(bad(
                name,
                format!(
                    "space {other:?} is not supported; supported: right-anterior-superior (RAS), \
                     left-anterior-superior (LAS), left-posterior-superior (LPS), scanner-xyz"
                ),
            ))
        }
    })
}

/// The RAS voxel → world affine of the header (see the module doc for the math).
pub(super) fn nrrd_affine(h: &Header, name: &str) -> Result<Affine> {
    let mut a = IDENTITY;
    let space = h.get("space");
    let space_dim = h.get("space dimension");
    if let Some(sd) = space_dim {
        if sd.trim() != "3" {
            return Err(bad(
                name,
                format!("space dimension {sd}: only 3 is supported"),
            ));
        }
    }
    if let Some(dirs) = h.get("space directions") {
        let sign = match space {
            Some(s) => space_to_ras(s, name)?,
            None if space_dim.is_some() => [-1.0, -1.0, 1.0],
            None => {
                return Err(bad(
                    name,
                    "space directions without \"space\" or \"space dimension\"",
                ))
            }
        };
        let toks = vector_tokens(dirs);
        if toks.len() != 3 {
            return Err(bad(
                name,
                format!("space directions {dirs:?}: expected one vector per axis (3)"),
            ));
        }
        for (c, t) in toks.iter().enumerate() {
            let v = parse_vector(t, name, "space directions")?.ok_or_else(|| {
                bad(
                    name,
                    format!("space directions {dirs:?}: axis {c} is \"none\", but all three axes of a volume are spatial"),
                )
            })?;
            for r in 0..3 {
                a[r][c] = sign[r] * v[r] + 0.0; // no −0.0 from negated zeros
            }
        }
        if let Some(o) = h.get("space origin") {
            let o = parse_vector(o, name, "space origin")?
                .ok_or_else(|| bad(name, "space origin is \"none\""))?;
            for r in 0..3 {
                a[r][3] = sign[r] * o[r] + 0.0;
            }
        }
        if let Some(u) = h.get("space units") {
            for unit in u.split_whitespace() {
                let unit = unit.trim_matches('"');
                if !unit.is_empty() && unit != "mm" {
                    return Err(bad(
                        name,
                        format!("space units {u:?}: only millimetres (\"mm\") are supported"),
                    ));
                }
            }
        }
    } else if let Some(sp) = h.get("spacings") {
        let s: Vec<f64> = sp
            .split_whitespace()
            .map(|t| t.parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad(name, format!("spacings {sp:?} are not numbers")))?;
        if s.len() != 3 || s.iter().any(|v| !(v.is_finite() && *v != 0.0)) {
            return Err(bad(
                name,
                format!("spacings {sp:?}: expected three finite non-zero numbers"),
            ));
        }
        for c in 0..3 {
            a[c][c] = s[c];
        }
    }
    let spacing = spacing_of(&a);
    if let Some(c) = (0..3).find(|&c| spacing[c] <= 0.0) {
        return Err(bad(
            name,
            format!("zero voxel size along axis {c}: affine {a:?}"),
        ));
    }
    Ok(a)
}
