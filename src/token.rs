//! API tokens for `sweep serve`: created, listed and revoked from the command line
//! (`sweep token create|list|revoke`), kept in `sweep_tokens` as an argon2 hash only, and
//! checked on every request (a revoked token stops working at once, in every server process).
//!
//! A token reads `swp_<id>_<secret>`: the id finds its row without a scan, the secret is what
//! the hash guards. Neither the token nor its hash is ever logged or shown again.

use crate::db::Db;
use anyhow::{bail, Context, Result};
use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub use crate::role::Role;

/// Who is asking: a token's name and role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

/// A token as `token list` shows it (never the token or its hash).
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token name: 1 to 64 of letters, digits, `.`, `_`, `-` (it appears in the audit and logs).
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        bail!("token name {name:?} is not valid: use 1 to 64 letters, digits, '.', '_' or '-'");
    }
    Ok(())
}

/// `bytes` random bytes from the OS, in hex (token parts, session ids, CSRF tokens).
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Hash a secret with argon2id (a random salt, the crate's default cost).
pub fn hash_secret(secret: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the token: {e}"))
}

/// True when `secret` matches the stored argon2 hash.
pub fn verify_secret(secret: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(secret.as_bytes(), &h).is_ok())
}

/// The id and secret of a token, if it has the token's shape.
pub fn split(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("swp_")?;
    let (id, secret) = rest.split_once('_')?;
    let hexy = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hexy(id, 16) && hexy(secret, 48)).then_some((id, secret))
}

/// Create a token named `name` with `role`; returns the token (shown once). A revoked token's
/// name may be used again; a live one's may not.
pub async fn create(db: &Db, name: &str, role: Role, now: DateTime<Utc>) -> Result<String> {
    check_name(name)?;
    let id = random_hex(8);
    let secret = random_hex(24);
    let hash = hash_secret(&secret)?;
    let mut q = db.sql();
    q.push("SELECT revoked_at FROM sweep_tokens WHERE name = ").bind(name);
    let existing = db.read(&q, |r| r.time(0)).await?;
    if let Some(revoked) = existing.first() {
        if revoked.is_none() {
            bail!("a token named {name:?} exists: revoke it first (`sweep token revoke {name}`) or pick another name");
        }
        let mut q = db.sql();
        q.push("DELETE FROM sweep_tokens WHERE name = ").bind(name);
        db.execute(&q).await?;
    }
    let mut q = db.sql();
    q.push("INSERT INTO sweep_tokens (name, token_id, role, hash, created_at) VALUES (")
        .bind(name)
        .push(", ")
        .bind(id.as_str())
        .push(", ")
        .bind(role.name())
        .push(", ")
        .bind(hash)
        .push(", ")
        .bind(now)
        .push(")");
    db.execute(&q).await.context("cannot store the token")?;
    Ok(format!("swp_{id}_{secret}"))
}

/// Every token, live and revoked, by name.
pub async fn list(db: &Db) -> Result<Vec<TokenInfo>> {
    let q = db.raw("SELECT name, role, created_at, last_used_at, revoked_at FROM sweep_tokens ORDER BY name");
    db.read(&q, |r| {
        Ok(TokenInfo {
            name: r.text_req(0)?,
            role: Role::parse(&r.text_req(1)?).unwrap_or(Role::Viewer),
            created_at: r.time_req(2)?,
            last_used_at: r.time(3)?,
            revoked_at: r.time(4)?,
        })
    })
    .await
}

/// Revoke the live token named `name`; false when there is none.
pub async fn revoke(db: &Db, name: &str, now: DateTime<Utc>) -> Result<bool> {
    let mut q = db.sql();
    q.push("UPDATE sweep_tokens SET revoked_at = ").bind(now);
    q.push(" WHERE name = ").bind(name).push(" AND revoked_at IS NULL");
    Ok(db.execute(&q).await? > 0)
}

/// A live token's row, found by the token's id: its name, role and hash.
pub async fn lookup(db: &Db, token_id: &str) -> Result<Option<(String, Role, String)>> {
    let mut q = db.sql();
    q.push("SELECT name, role, hash FROM sweep_tokens WHERE token_id = ").bind(token_id);
    q.push(" AND revoked_at IS NULL");
    let rows = db.read(&q, |r| Ok((r.text_req(0)?, r.text_req(1)?, r.text_req(2)?))).await?;
    Ok(rows.into_iter().next().and_then(|(n, r, h)| Some((n, Role::parse(&r)?, h))))
}

/// Note that a token was used (the caller limits how often).
pub async fn touch(db: &Db, name: &str, now: DateTime<Utc>) -> Result<()> {
    let mut q = db.sql();
    q.push("UPDATE sweep_tokens SET last_used_at = ").bind(now).push(" WHERE name = ").bind(name);
    db.execute(&q).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_verifies_against_its_hash_only() {
        let h = hash_secret("abc").unwrap();
        assert!(verify_secret("abc", &h));
        assert!(!verify_secret("abd", &h));
        assert!(!verify_secret("abc", "not a hash"));
    }

    #[test]
    fn only_the_token_shape_splits() {
        let t = format!("swp_{}_{}", "0".repeat(16), "a".repeat(48));
        assert_eq!(split(&t), Some(("0000000000000000", &*"a".repeat(48))));
        assert_eq!(split("Bearer x"), None);
        assert_eq!(split(&format!("swp_{}_{}", "0".repeat(15), "a".repeat(48))), None);
        assert_eq!(split(&format!("swp_{}_{}", "0".repeat(16), "g".repeat(48))), None);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("ci-bot.prod_1").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
    }
}
