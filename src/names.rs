//! File names as text, losslessly. Plans, reports, the audit and `restore` speak UTF-8, but a
//! name on disk may be any bytes: a name component that is not UTF-8 (or that would read as an
//! escaped one) is written as `?b:` followed by its bytes percent-encoded, so every name has
//! exactly one text form and the text gives back exactly the bytes. UTF-8 names are written as
//! they are.
//!
//! No I/O here: the local store and the walkers encode, the local store decodes.

use std::ffi::{OsStr, OsString};
use std::path::{Component, Path, PathBuf};

/// The mark of an escaped name component.
pub const ESCAPED: &str = "?b:";

/// A name component as text.
pub fn encode_component(c: &OsStr) -> String {
    match c.to_str() {
        Some(s) if !s.starts_with(ESCAPED) => s.to_string(),
        _ => {
            let mut out = String::from(ESCAPED);
            for &b in raw_bytes(c).iter() {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        }
    }
}

/// The name a component's text stands for; `None` when it is an escape that is not well
/// formed or that would name something no single component may (`.`, `..`, a `/`, a NUL, an
/// empty name).
pub fn decode_component(c: &str) -> Option<OsString> {
    let Some(esc) = c.strip_prefix(ESCAPED) else { return Some(OsString::from(c)) };
    let mut bytes = Vec::with_capacity(esc.len());
    let b = esc.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = esc.get(i + 1..i + 3)?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            x if x.is_ascii_alphanumeric() || b"-._~".contains(&x) => {
                bytes.push(x);
                i += 1;
            }
            _ => return None,
        }
    }
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') || bytes.contains(&0) {
        return None;
    }
    from_bytes(bytes)
}

/// A relative path (its normal components) as text: components encoded, joined by `/`.
pub fn encode_rel(p: &Path) -> String {
    let parts: Vec<String> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(encode_component(s)),
            _ => None,
        })
        .collect();
    parts.join("/")
}

/// The path a relative path's text stands for; `None` if a component does not decode.
pub fn decode_rel(rel: &str) -> Option<PathBuf> {
    rel.split('/').filter(|c| !c.is_empty()).map(decode_component).collect()
}

/// Whether a relative path's text holds an escaped component (such a name is never referenced
/// by a payload, which is UTF-8 text).
pub fn is_escaped(rel: &str) -> bool {
    rel.split('/').any(|c| c.starts_with(ESCAPED))
}

#[cfg(unix)]
fn raw_bytes(c: &OsStr) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    c.as_bytes().to_vec()
}

#[cfg(not(unix))]
fn raw_bytes(c: &OsStr) -> Vec<u8> {
    c.to_string_lossy().into_owned().into_bytes()
}

#[cfg(unix)]
fn from_bytes(b: Vec<u8>) -> Option<OsString> {
    use std::os::unix::ffi::OsStringExt;
    Some(OsString::from_vec(b))
}

#[cfg(not(unix))]
fn from_bytes(b: Vec<u8>) -> Option<OsString> {
    String::from_utf8(b).ok().map(OsString::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_names_stay_as_they_are_and_others_are_escaped() {
        assert_eq!(encode_component(OsStr::new("ünï cödé.json")), "ünï cödé.json");
        assert_eq!(encode_component(OsStr::new("?b:x")), "?b:%3Fb%3Ax", "a name that looks escaped is escaped");
        assert_eq!(decode_component("?b:%3Fb%3Ax").unwrap(), OsString::from("?b:x"));
        for bad in ["?b:%2E%2E", "?b:%2E", "?b:a%2Fb", "?b:", "?b:%0", "?b:%zz", "?b:a b", "?b:%00"] {
            assert!(decode_component(bad).is_none(), "{bad:?} must not decode");
        }
    }

    #[cfg(unix)]
    #[test]
    fn any_bytes_round_trip() {
        use proptest::prelude::*;
        use std::os::unix::ffi::OsStrExt;
        proptest!(ProptestConfig::with_cases(3000), |(bytes in proptest::collection::vec(1u8..=255, 1..40))| {
            prop_assume!(!bytes.contains(&b'/') && bytes != b"." && bytes != b"..");
            let name = OsStr::from_bytes(&bytes);
            let text = encode_component(name);
            prop_assert_eq!(decode_component(&text).unwrap(), name.to_os_string());
            let rel = Path::new("a").join(name).join("b");
            prop_assert_eq!(decode_rel(&encode_rel(&rel)).unwrap(), rel);
        });
    }
}
