//! UI-file references in published-module payloads (SPEC §4.1): any JSON string, at any depth,
//! that contains `published_modules/` references the path from `published_modules/` on, without
//! query or fragment. `/media/published_modules/7/v3/step-1.json` and
//! `https://cdn.example/media/published_modules/7/v3/step-1.json?x=1` both reference
//! `published_modules/7/v3/step-1.json`.

use chrono::{DateTime, Utc};
use std::cmp::Ordering;

pub const MARKER: &str = "published_modules/";

/// The references of one payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadRefs {
    /// Parsed: these paths (sorted, without duplicates).
    Known(Vec<String>),
    /// Not valid JSON: its references cannot be known. `salvaged` holds what a plain text scan
    /// found, to be protected (never to justify a deletion).
    Unknown { error: String, salvaged: Vec<String> },
}

/// The path a string references, if any.
pub fn reference_in(s: &str) -> Option<String> {
    let start = s.find(MARKER)?;
    let rest = &s[start..];
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let path = rest[..end].trim_end();
    (path.len() > MARKER.len()).then(|| path.to_string())
}

/// Every reference in a payload's JSON text. The text is read by an iterative scanner, not a
/// recursive parser: a valid payload nested ten thousand deep is read like a flat one (a
/// recursive parser stops at a depth limit, and such a payload would wrongly count as invalid).
pub fn payload_refs(text: Option<&str>) -> PayloadRefs {
    let Some(text) = text else { return PayloadRefs::Known(Vec::new()) };
    let want = text.contains(MARKER);
    let mut out = Vec::new();
    match scan_json(text, |s| {
        if want {
            out.extend(reference_in(s))
        }
    }) {
        Ok(()) => {
            out.sort_by(|a, b| path_cmp(a, b));
            out.dedup();
            PayloadRefs::Known(out)
        }
        Err(error) => PayloadRefs::Unknown { error, salvaged: if want { salvage(text) } else { Vec::new() } },
    }
}

/// Check that `text` is one JSON value and hand every string in it (keys too, unescaped) to
/// `each`. Iterative: depth costs memory for a stack of bytes, not call frames.
pub fn scan_json(text: &str, mut each: impl FnMut(&str)) -> Result<(), String> {
    let b = text.as_bytes();
    let mut i = 0;
    // Open containers: b'{' or b'['.
    let mut stack: Vec<u8> = Vec::new();
    let err = |what: &str, at: usize| Err(format!("not valid JSON: {what} at byte {at}"));
    let ws = |i: &mut usize| skip_ws(b, i);
    // Expecting a value (after `[`, `,` in an array, `:`), or the value of the whole text.
    'value: loop {
        ws(&mut i);
        if i >= b.len() {
            return err("a value was expected", i);
        }
        match b[i] {
            b'{' | b'[' => {
                let open = b[i];
                stack.push(open);
                i += 1;
                ws(&mut i);
                let close = if open == b'{' { b'}' } else { b']' };
                if i < b.len() && b[i] == close {
                    stack.pop();
                    i += 1;
                } else if open == b'{' {
                    key(b, &mut i, &mut each)?;
                    continue 'value;
                } else {
                    continue 'value;
                }
            }
            b'"' => {
                let s = string(b, &mut i)?;
                each(&s);
            }
            b't' if b[i..].starts_with(b"true") => i += 4,
            b'f' if b[i..].starts_with(b"false") => i += 5,
            b'n' if b[i..].starts_with(b"null") => i += 4,
            b'-' | b'0'..=b'9' => number(b, &mut i)?,
            _ => return err("a value was expected", i),
        }
        // After a value: close containers, or go on with `,`.
        loop {
            ws(&mut i);
            let Some(&top) = stack.last() else {
                return if i == b.len() { Ok(()) } else { err("trailing characters", i) };
            };
            if i >= b.len() {
                return err("the text ends inside a container", i);
            }
            let close = if top == b'{' { b'}' } else { b']' };
            if b[i] == close {
                stack.pop();
                i += 1;
                continue;
            }
            if b[i] != b',' {
                return err("',' or a closing bracket was expected", i);
            }
            i += 1;
            if top == b'{' {
                key(b, &mut i, &mut each)?;
            }
            continue 'value;
        }
    }
}

/// Whitespace at `b[*i]`, skipped.
fn skip_ws(b: &[u8], i: &mut usize) {
    while *i < b.len() && matches!(b[*i], b' ' | b'\t' | b'\n' | b'\r') {
        *i += 1;
    }
}

/// An object's key and its `:` (whitespace allowed around), the key handed to `each`.
fn key(b: &[u8], i: &mut usize, each: &mut impl FnMut(&str)) -> Result<(), String> {
    skip_ws(b, i);
    if *i >= b.len() || b[*i] != b'"' {
        return Err(format!("not valid JSON: a key was expected at byte {i}"));
    }
    each(&string(b, i)?);
    skip_ws(b, i);
    if *i >= b.len() || b[*i] != b':' {
        return Err(format!("not valid JSON: ':' was expected at byte {i}"));
    }
    *i += 1;
    Ok(())
}

/// A JSON string starting at `b[*i] == '"'`, unescaped; `*i` moves past it.
fn string(b: &[u8], i: &mut usize) -> Result<String, String> {
    let start = *i;
    *i += 1;
    let mut out: Vec<u8> = Vec::new();
    let bad = |what: &str, at: usize| format!("not valid JSON: {what} at byte {at}");
    loop {
        let Some(&c) = b.get(*i) else { return Err(bad("an unterminated string", start)) };
        match c {
            b'"' => {
                *i += 1;
                return String::from_utf8(out).map_err(|_| bad("a string that is not UTF-8", start));
            }
            b'\\' => {
                let e = *b.get(*i + 1).ok_or_else(|| bad("an unterminated escape", *i))?;
                *i += 2;
                match e {
                    b'"' => out.push(b'"'),
                    b'\\' => out.push(b'\\'),
                    b'/' => out.push(b'/'),
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'u' => {
                        let hex = |at: usize| {
                            b.get(at..at + 4)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u32::from_str_radix(h, 16).ok())
                                .ok_or_else(|| bad("a bad \\u escape", at))
                        };
                        let mut cp = hex(*i)?;
                        *i += 4;
                        if (0xD800..0xDC00).contains(&cp) && b.get(*i..*i + 2) == Some(b"\\u") {
                            let lo = hex(*i + 2)?;
                            if (0xDC00..0xE000).contains(&lo) {
                                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                                *i += 6;
                            }
                        }
                        // A lone surrogate is not text: refused, as serde_json and PostgreSQL do.
                        let ch = char::from_u32(cp).ok_or_else(|| bad("a lone surrogate in a \\u escape", *i))?;
                        out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                    _ => return Err(bad("an unknown escape", *i - 1)),
                }
            }
            0..=0x1F => return Err(bad("a control character in a string", *i)),
            _ => {
                out.push(c);
                *i += 1;
            }
        }
    }
}

/// A JSON number at `b[*i]`; `*i` moves past it.
fn number(b: &[u8], i: &mut usize) -> Result<(), String> {
    let start = *i;
    let digits = |i: &mut usize| {
        let s = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > s
    };
    if b[*i] == b'-' {
        *i += 1;
    }
    if b.get(*i) == Some(&b'0') {
        *i += 1;
    } else if !digits(i) {
        return Err(format!("not valid JSON: a bad number at byte {start}"));
    }
    if b.get(*i) == Some(&b'.') {
        *i += 1;
        if !digits(i) {
            return Err(format!("not valid JSON: a bad number at byte {start}"));
        }
    }
    if matches!(b.get(*i), Some(b'e') | Some(b'E')) {
        *i += 1;
        if matches!(b.get(*i), Some(b'+') | Some(b'-')) {
            *i += 1;
        }
        if !digits(i) {
            return Err(format!("not valid JSON: a bad number at byte {start}"));
        }
    }
    Ok(())
}

/// References found by scanning text that is not valid JSON: each `published_modules/…` run up
/// to a quote, whitespace, `?` or `#`.
fn salvage(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(MARKER) {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| c == '"' || c == '\'' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(tail.len());
        if end > MARKER.len() {
            out.push(tail[..end].trim_end_matches('\\').to_string());
        }
        rest = &tail[MARKER.len()..];
    }
    out.sort_by(|a, b| path_cmp(a, b));
    out.dedup();
    out
}

/// Order paths component by component (`a/b` before `a-b/c`), the order a sorted directory walk
/// visits them, so that a sorted list of references can be merged with a walk.
pub fn path_cmp(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

/// One published module row.
#[derive(Debug)]
pub struct ModuleRow {
    pub key: String,
    pub module_id: i64,
    pub version: i64,
    pub published_at: Option<DateTime<Utc>>,
    pub refs: PayloadRefs,
}

/// A set of paths in one buffer, sorted component-wise (`refs::path_cmp`) once built: about
/// the size of the text itself, where a `BTreeSet<String>` would take three times as much.
///
/// Made with `RefSet::spilling(bytes)`, the buffer is sorted and written to a temporary file
/// (a sorted run) each time its text passes `bytes`, and `finish` merges the runs into one
/// sorted file that the cursor reads: ten million references cost disk, not memory. Such a set
/// is read with `cursor` only.
#[derive(Debug, Default)]
pub struct RefSet {
    buf: String,
    spans: Vec<(u32, u32)>,
    sorted: bool,
    /// Text held in memory before a run is written (0: never).
    spill_at: usize,
    runs: Vec<std::fs::File>,
    /// The merged runs and how many paths they hold.
    merged: Option<(std::fs::File, usize)>,
    /// The first error writing or reading the temporary files.
    error: std::sync::Mutex<Option<String>>,
}

impl RefSet {
    /// A set that goes to temporary files past `bytes` of text.
    pub fn spilling(bytes: usize) -> RefSet {
        RefSet { spill_at: bytes, ..RefSet::default() }
    }

    pub fn push(&mut self, path: &str) {
        if self.spill_at > 0 && self.buf.capacity() == 0 {
            // One allocation for the whole buffer: it never grows past the spill size.
            self.buf.reserve_exact(self.spill_at + 64 * 1024);
        }
        let start = self.buf.len() as u32;
        self.buf.push_str(path);
        self.spans.push((start, path.len() as u32));
        self.sorted = false;
        if self.spill_at > 0 && self.buf.len() >= self.spill_at {
            self.write_run();
        }
    }

    fn get(&self, i: usize) -> &str {
        let (s, l) = self.spans[i];
        &self.buf[s as usize..(s + l) as usize]
    }

    fn fail(&self, e: impl std::fmt::Display) {
        self.error.lock().expect("not poisoned").get_or_insert(format!(
            "cannot use a temporary file for the references ({e}): set TMPDIR to a directory with room"
        ));
    }

    /// Whether writing or reading the temporary files failed (the cursor then finds every
    /// path referenced: nothing is deleted on a reference that could not be read).
    pub fn error(&self) -> Option<String> {
        self.error.lock().expect("not poisoned").clone()
    }

    fn sort_in_memory(&mut self) {
        let buf = &self.buf;
        let at = |(s, l): (u32, u32)| &buf[s as usize..(s + l) as usize];
        self.spans.sort_unstable_by(|a, b| path_cmp(at(*a), at(*b)));
        self.spans.dedup_by(|a, b| at(*a) == at(*b));
    }

    /// Sort the buffer and write it to a new run.
    fn write_run(&mut self) {
        use std::io::{Seek, Write};
        self.sort_in_memory();
        let written = tempfile::tempfile().and_then(|f| {
            let mut w = std::io::BufWriter::with_capacity(1 << 16, f);
            for i in 0..self.spans.len() {
                write_record(&mut w, self.get(i))?;
            }
            w.flush()?;
            let mut f = w.into_inner().map_err(|e| e.into_error())?;
            f.rewind()?;
            Ok(f)
        });
        match written {
            Ok(f) => self.runs.push(f),
            Err(e) => self.fail(e),
        }
        self.buf.clear();
        self.spans.clear();
    }

    /// Sort and remove duplicates (merging the runs on disk, for a spilling set).
    pub fn finish(&mut self) {
        if self.runs.is_empty() {
            self.sort_in_memory();
            self.spans.shrink_to_fit();
            self.sorted = true;
            return;
        }
        if !self.spans.is_empty() {
            self.write_run();
        }
        self.buf = String::new();
        self.spans = Vec::new();
        match merge_runs(std::mem::take(&mut self.runs)) {
            Ok(m) => self.merged = Some(m),
            Err(e) => self.fail(e),
        }
        self.sorted = true;
    }

    pub fn len(&self) -> usize {
        match &self.merged {
            Some((_, n)) => *n,
            None => self.spans.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.error().is_none()
    }

    /// Whether `path` is in a set held in memory (not one made with `spilling`).
    pub fn contains(&self, path: &str) -> bool {
        debug_assert!(self.sorted && self.merged.is_none());
        self.spans.binary_search_by(|s| path_cmp(self.get_span(*s), path)).is_ok()
    }

    fn get_span(&self, (s, l): (u32, u32)) -> &str {
        &self.buf[s as usize..(s + l) as usize]
    }

    /// A cursor for merging with paths that arrive in the same order.
    pub fn cursor(&self) -> RefCursor<'_> {
        debug_assert!(self.sorted);
        let disk = self.merged.as_ref().map(|(f, _)| {
            use std::io::Seek;
            let mut f: &std::fs::File = f;
            if let Err(e) = f.rewind() {
                self.fail(e);
            }
            (std::io::BufReader::with_capacity(1 << 16, f), None)
        });
        RefCursor { set: self, i: 0, disk }
    }
}

/// One path in a run: its length (u32, little-endian), then its bytes. Any byte may be in a
/// path, so no separator is used.
fn write_record(w: &mut impl std::io::Write, path: &str) -> std::io::Result<()> {
    w.write_all(&(path.len() as u32).to_le_bytes())?;
    w.write_all(path.as_bytes())
}

/// The next path of a run, `None` at its end.
fn read_record(r: &mut impl std::io::Read) -> std::io::Result<Option<String>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut bytes)?;
    String::from_utf8(bytes).map(Some).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Merge sorted runs into one sorted file without duplicates; returns it and its length.
fn merge_runs(runs: Vec<std::fs::File>) -> std::io::Result<(std::fs::File, usize)> {
    use std::io::{Seek, Write};
    /// A run's current path, ordered so that the heap's top is the smallest path.
    struct Head(String, usize);
    impl PartialEq for Head {
        fn eq(&self, o: &Head) -> bool {
            self.0 == o.0
        }
    }
    impl Eq for Head {}
    impl PartialOrd for Head {
        fn partial_cmp(&self, o: &Head) -> Option<Ordering> {
            Some(self.cmp(o))
        }
    }
    impl Ord for Head {
        fn cmp(&self, o: &Head) -> Ordering {
            path_cmp(&o.0, &self.0)
        }
    }
    let mut readers: Vec<_> = runs.into_iter().map(|f| std::io::BufReader::with_capacity(1 << 16, f)).collect();
    let mut heap = std::collections::BinaryHeap::new();
    for (i, r) in readers.iter_mut().enumerate() {
        if let Some(p) = read_record(r)? {
            heap.push(Head(p, i));
        }
    }
    let mut w = std::io::BufWriter::with_capacity(1 << 16, tempfile::tempfile()?);
    let (mut n, mut last): (usize, Option<String>) = (0, None);
    while let Some(Head(p, i)) = heap.pop() {
        if let Some(next) = read_record(&mut readers[i])? {
            heap.push(Head(next, i));
        }
        if last.as_deref() != Some(p.as_str()) {
            write_record(&mut w, &p)?;
            n += 1;
            last = Some(p);
        }
    }
    w.flush()?;
    let mut f = w.into_inner().map_err(|e| e.into_error())?;
    f.rewind()?;
    Ok((f, n))
}

/// Walks a sorted `RefSet` alongside an ascending stream of paths.
pub struct RefCursor<'a> {
    set: &'a RefSet,
    i: usize,
    /// A spilled set: the merged file and its current path (`None` before the first read).
    disk: Option<(std::io::BufReader<&'a std::fs::File>, Option<Option<String>>)>,
}

impl RefCursor<'_> {
    /// Whether `path` is in the set; `path`s must come in ascending `path_cmp` order.
    pub fn seek(&mut self, path: &str) -> bool {
        if let Some((reader, current)) = &mut self.disk {
            loop {
                let cur = match current {
                    Some(c) => c,
                    None => match read_record(reader) {
                        Ok(p) => current.insert(p),
                        Err(e) => {
                            self.set.fail(e);
                            return true;
                        }
                    },
                };
                let Some(c) = cur else { return self.set.error().is_some() };
                match path_cmp(c, path) {
                    Ordering::Less => *current = None,
                    Ordering::Equal => return true,
                    Ordering::Greater => return self.set.error().is_some(),
                }
            }
        }
        while self.i < self.set.len() {
            match path_cmp(self.set.get(self.i), path) {
                Ordering::Less => self.i += 1,
                Ordering::Equal => return true,
                Ordering::Greater => return false,
            }
        }
        false
    }
}

/// `published_modules/<module_id>/`: where a row with an unreadable payload might reference
/// files; such prefixes are protected.
pub fn module_prefix(module_id: i64) -> String {
    format!("{MARKER}{module_id}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_found_at_any_depth_in_any_form() {
        let payload = r#"{
            "title": "Pump maintenance",
            "steps": [
                {"ui": "/media/published_modules/7/v3/step-1.json", "next": 2},
                {"ui": "https://cdn.example/media/published_modules/7/v3/step-2.json?x=1#top",
                 "assets": {"nested": [["published_modules/7/shared/logo.json"]]}},
                {"ui": "/media/published_modules/7/v3/step-1.json"}
            ],
            "note": "no reference here: published_modules/",
            "count": 3, "ok": true, "nothing": null
        }"#;
        assert_eq!(
            payload_refs(Some(payload)),
            PayloadRefs::Known(vec![
                "published_modules/7/shared/logo.json".into(),
                "published_modules/7/v3/step-1.json".into(),
                "published_modules/7/v3/step-2.json".into(),
            ])
        );
        assert_eq!(payload_refs(Some(r#"{"a": 1}"#)), PayloadRefs::Known(vec![]));
        assert_eq!(payload_refs(None), PayloadRefs::Known(vec![]));
    }

    #[test]
    fn a_broken_payload_is_unknown_with_what_a_scan_finds() {
        let r = payload_refs(Some(r#"{"steps": [{"ui": "/media/published_modules/9/v1/a.json?v=2"}, "#));
        match r {
            PayloadRefs::Unknown { salvaged, .. } => {
                assert_eq!(salvaged, vec!["published_modules/9/v1/a.json".to_string()])
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(payload_refs(Some("not json")), PayloadRefs::Unknown { .. }));
    }

    #[test]
    fn component_order_matches_a_sorted_walk() {
        let mut v = vec!["a-b/c", "a/b", "a/b/c", "a0", "a"];
        v.sort_by(|x, y| path_cmp(x, y));
        assert_eq!(v, vec!["a", "a/b", "a/b/c", "a-b/c", "a0"]);
    }

    #[test]
    fn a_spilled_refset_finds_what_one_in_memory_finds() {
        let paths: Vec<String> = (0..200).map(|i| format!("published_modules/{}/v{}/s.json", i % 37, i % 7)).collect();
        let mut walk: Vec<String> = (0..60).map(|i| format!("published_modules/{i}/v{}/s.json", i % 9)).collect();
        walk.extend(paths.iter().take(50).cloned());
        walk.sort_by(|a, b| path_cmp(a, b));
        walk.dedup();
        let (mut mem, mut disk) = (RefSet::default(), RefSet::spilling(300));
        for p in &paths {
            mem.push(p);
            disk.push(p);
        }
        mem.finish();
        disk.finish();
        assert!(disk.merged.is_some(), "the small limit made runs on disk");
        assert_eq!(disk.len(), mem.len(), "duplicates across runs are merged");
        let (mut a, mut b) = (mem.cursor(), disk.cursor());
        let found: Vec<bool> = walk.iter().map(|w| a.seek(w)).collect();
        assert_eq!(walk.iter().map(|w| b.seek(w)).collect::<Vec<_>>(), found);
        assert!(found.iter().any(|f| *f) && found.iter().any(|f| !*f));
        assert!(disk.error().is_none());
    }

    #[test]
    fn refset_sorts_dedups_and_merges() {
        let mut r = RefSet::default();
        for p in [
            "published_modules/2/b.json",
            "published_modules/1/a.json",
            "published_modules/2/b.json",
            "published_modules/10/x.json",
        ] {
            r.push(p);
        }
        r.finish();
        assert_eq!(r.len(), 3);
        assert!(r.contains("published_modules/10/x.json") && !r.contains("published_modules/3/x.json"));
        let mut c = r.cursor();
        let walk = [
            "published_modules/1/a.json",
            "published_modules/1/z.json",
            "published_modules/10/x.json",
            "published_modules/2/b.json",
        ];
        let seen: Vec<bool> = walk.iter().map(|p| c.seek(p)).collect();
        assert_eq!(seen, [true, false, true, true]);
    }
}

/// Property tests: any payload text, however deep or broken, is read without a panic, and
/// every reference it yields is a clean path from `published_modules/` on.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "(/media/|https://cdn\\\\.x/)?(published_modules/)?[a-z0-9/._?#=-]{0,24}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z]{1,4}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn every_reference_is_a_clean_path(v in json()) {
            if let PayloadRefs::Known(refs) = payload_refs(Some(&v.to_string())) {
                for r in refs {
                    prop_assert!(r.starts_with(MARKER), "{r:?}");
                    prop_assert!(!r.contains('?') && !r.contains('#'), "{r:?}");
                }
            } else {
                prop_assert!(false, "valid JSON read as unknown");
            }
        }

        #[test]
        fn any_text_is_read_without_a_panic(s in "\\PC{0,200}") {
            let _ = payload_refs(Some(&s));
        }

        /// The scanner accepts exactly what serde_json accepts, and finds the same strings.
        #[test]
        fn the_scanner_agrees_with_serde_json(v in json(), junk in "[\\[\\]{}:,\"a0-9 .eE+-]{0,30}") {
            let text = v.to_string();
            let mut strings = Vec::new();
            prop_assert!(scan_json(&text, |s| strings.push(s.to_string())).is_ok(), "{text}");
            let mut expected = Vec::new();
            fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
                match v {
                    serde_json::Value::String(s) => out.push(s.clone()),
                    serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                    serde_json::Value::Object(o) => o.iter().for_each(|(k, x)| {
                        out.push(k.clone());
                        walk(x, out)
                    }),
                    _ => {}
                }
            }
            walk(&v, &mut expected);
            strings.sort();
            expected.sort();
            prop_assert_eq!(strings, expected);
            let ours = scan_json(&junk, |_| {}).is_ok();
            let theirs = serde_json::from_str::<serde::de::IgnoredAny>(&junk).is_ok();
            prop_assert_eq!(ours, theirs, "{:?}", junk);
        }
    }

    #[test]
    fn a_valid_payload_ten_thousand_deep_is_read() {
        let depth = 10_000;
        let text =
            format!("{}{{\"ui\": \"/media/published_modules/9/deep.json\"}}{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(payload_refs(Some(&text)), PayloadRefs::Known(vec!["published_modules/9/deep.json".into()]));
        let broken = format!("{}1", "[".repeat(depth));
        assert!(matches!(payload_refs(Some(&broken)), PayloadRefs::Unknown { .. }));
    }
}
