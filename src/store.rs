//! Where files and objects live: confined local roots and object stores by URL.

pub mod local;
pub mod object;

/// True when `rel` lies under one of the protected prefixes (SPEC §5 rule 3: `backups/`).
pub fn is_protected(rel: &str, prefixes: &[String]) -> bool {
    let rel = rel.trim_start_matches("./");
    prefixes.iter().any(|p| {
        let p = p.trim_end_matches('/');
        rel == p || rel.starts_with(&format!("{p}/"))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn protected_prefixes_match_whole_segments() {
        let p = vec!["backups/".to_string()];
        assert!(super::is_protected("backups/a.png", &p));
        assert!(super::is_protected("backups", &p));
        assert!(!super::is_protected("backups2/a.png", &p));
        assert!(!super::is_protected("a/backups/x", &p));
    }
}
