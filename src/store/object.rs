//! Object stores named by URL (`s3://bucket/prefix`, `file:///path`), through object_store.
//!
//! Every store is an `Arc<dyn ObjectStore>` rooted at its prefix, so keys are always relative
//! and nothing outside the prefix can be named. Deletion goes through `delete_stream` in
//! chunks of at most 1,000 keys (one S3 DeleteObjects request each), several at once.

use crate::config::{EnvSource, ObjectStorageSettings, Secret};
use futures::stream::{self, StreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;
use std::sync::Arc;

/// Why a store could not be opened or a key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store URL {url:?} is not valid: {why}")]
    BadUrl { url: String, why: String },
    #[error("cannot open store {url}: {source}")]
    Open { url: String, source: object_store::Error },
    #[error("object key {key:?} is not usable: {why}")]
    BadKey { key: String, why: String },
}

/// Where an S3 store is: bucket, key prefix, and (for non-AWS services) the endpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct S3Location {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

/// Which environment variables hold an S3 store's credentials (never the values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Credentials {
    /// `OBJECT_STORAGE_ACCESS_KEY` / `OBJECT_STORAGE_SECRET_KEY`.
    ObjectStorage,
    /// `CLOUDCUBE_ACCESS_KEY_ID` / `CLOUDCUBE_SECRET_ACCESS_KEY`, else `OBJECT_STORAGE_*`.
    Cloudcube,
}

impl Credentials {
    /// The key pair, read now from the environment and settings.
    pub fn read(self, os: &ObjectStorageSettings, env: &dyn EnvSource) -> (Option<Secret>, Option<Secret>) {
        let pick = |var: &str, fallback: &Option<crate::config::Sourced<Secret>>| {
            let own = match self {
                Credentials::Cloudcube => env.get(var).map(Secret::new),
                Credentials::ObjectStorage => None,
            };
            own.or_else(|| fallback.as_ref().map(|s| s.value.clone()))
        };
        (pick("CLOUDCUBE_ACCESS_KEY_ID", &os.access_key), pick("CLOUDCUBE_SECRET_ACCESS_KEY", &os.secret_key))
    }
}

/// Where a store is, without credentials: what a plan records, and what `apply` and
/// `restore` open again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StoreLocation {
    S3 {
        #[serde(flatten)]
        at: S3Location,
        credentials: Credentials,
    },
    File {
        dir: std::path::PathBuf,
    },
}

/// A store as a plan or a run records it: its URL (as shown in targets) and where it is.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoreRecord {
    pub url: String,
    pub location: StoreLocation,
}

impl StoreRecord {
    /// Open the store again where it was recorded, with credentials read now.
    pub fn open(&self, os: &ObjectStorageSettings) -> Result<NamedStore, StoreError> {
        match &self.location {
            StoreLocation::S3 { at, credentials } => {
                NamedStore::open_s3(&self.url, at, credentials.read(os, &crate::config::ProcessEnv), *credentials)
            }
            StoreLocation::File { dir } => {
                let s = NamedStore::open(&format!("file://{}", dir.display()), os)?;
                Ok(NamedStore { url: self.url.clone(), ..s })
            }
        }
    }
}

/// An opened store and the URL it was named by (without credentials).
#[derive(Debug, Clone)]
pub struct NamedStore {
    pub url: String,
    /// The store, rooted at its prefix: keys are relative to it.
    pub store: Arc<dyn ObjectStore>,
    pub location: StoreLocation,
    /// The bucket itself and the prefix, for bulk deletion: object_store's `PrefixStore` does
    /// not forward `delete_stream`, so through it every key would be one DELETE request.
    bulk: Option<(Arc<dyn ObjectStore>, ObjPath)>,
}

impl NamedStore {
    /// Open `s3://bucket[/prefix]` (credentials and endpoint from `OBJECT_STORAGE_*`) or
    /// `file:///dir`.
    pub fn open(url: &str, os: &ObjectStorageSettings) -> Result<NamedStore, StoreError> {
        let bad = |why: &str| StoreError::BadUrl { url: url.to_string(), why: why.to_string() };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket: expected s3://bucket/prefix"));
            }
            let loc = S3Location {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                endpoint: os.endpoint.as_ref().map(|e| e.value.clone()),
                region: os.region.as_ref().map(|r| r.value.clone()),
            };
            let creds = Credentials::ObjectStorage.read(os, &crate::config::ProcessEnv);
            NamedStore::open_s3(url, &loc, creds, Credentials::ObjectStorage)
        } else if let Some(rest) = url.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(bad("expected an absolute path: file:///dir"));
            }
            let dir = std::path::Path::new(rest);
            let fs = LocalFileSystem::new_with_prefix(dir)
                .map_err(|source| StoreError::Open { url: url.to_string(), source })?;
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
            Ok(NamedStore {
                url: url.to_string(),
                store: Arc::new(fs.with_automatic_cleanup(true)),
                location: StoreLocation::File { dir },
                bulk: None,
            })
        } else {
            Err(bad("expected s3://bucket/prefix or file:///dir"))
        }
    }

    /// Open a bucket and prefix on any S3-compatible service; `shown` names it in targets and
    /// errors (never with credentials); `from` says where the credentials came from.
    pub fn open_s3(
        shown: &str,
        loc: &S3Location,
        creds: (Option<Secret>, Option<Secret>),
        from: Credentials,
    ) -> Result<NamedStore, StoreError> {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&loc.bucket)
            .with_region(loc.region.as_deref().unwrap_or("us-east-1"));
        if let Some(ep) = &loc.endpoint {
            b = b
                .with_endpoint(ep.trim_end_matches('/'))
                .with_allow_http(ep.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let Some(k) = &creds.0 {
            b = b.with_access_key_id(k.expose());
        }
        if let Some(k) = &creds.1 {
            b = b.with_secret_access_key(k.expose());
        }
        let s3: Arc<dyn ObjectStore> =
            Arc::new(b.build().map_err(|source| StoreError::Open { url: shown.to_string(), source })?);
        let prefix = loc.prefix.trim_matches('/');
        let (store, bulk) = if prefix.is_empty() {
            (s3, None)
        } else {
            let p = parse_key(prefix).map_err(|_| StoreError::BadUrl {
                url: shown.to_string(),
                why: "the prefix is not a clean path".into(),
            })?;
            (Arc::new(PrefixStore::new(s3.clone(), p.clone())) as Arc<dyn ObjectStore>, Some((s3, p)))
        };
        Ok(NamedStore {
            url: shown.to_string(),
            store,
            location: StoreLocation::S3 { at: loc.clone(), credentials: from },
            bulk,
        })
    }

    /// Delete keys (relative to the prefix) in bulk requests of up to `chunk` keys (S3
    /// DeleteObjects: at most 1,000), `concurrency` requests at once, results in input order.
    /// A prefixed S3 store sends its requests to the bucket with the prefix prepended.
    pub async fn delete_keys(&self, keys: Vec<ObjPath>, chunk: usize, concurrency: usize) -> Vec<KeyResult> {
        match &self.bulk {
            None => delete_keys(&self.store, keys, chunk, concurrency).await,
            Some((bucket, prefix)) => {
                let full = keys.into_iter().map(|k| ObjPath::from_iter(prefix.parts().chain(k.parts()))).collect();
                delete_keys(bucket, full, chunk, concurrency).await
            }
        }
    }

    /// Every object of the store, listed under several prefixes at once: a delimiter listing
    /// walks down (at most three levels) until there are `width` prefixes or more, then up to
    /// `width` of them are listed side by side, pages streaming as they come. The objects come
    /// in no particular order; every object is listed once (those met on the way down, then
    /// those under each prefix found).
    pub async fn list_all(
        &self,
        width: usize,
    ) -> object_store::Result<stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>> {
        let width = width.max(1);
        let mut found = Vec::new();
        let mut frontier: Vec<Option<ObjPath>> = vec![None];
        for _ in 0..3 {
            let mut next = Vec::new();
            for p in &frontier {
                let r = self.store.list_with_delimiter(p.as_ref()).await?;
                found.extend(r.objects);
                next.extend(r.common_prefixes.into_iter().map(Some));
            }
            frontier = next;
            if frontier.is_empty() || frontier.len() >= width {
                break;
            }
        }
        let store = self.store.clone();
        let under = stream::iter(frontier).map(move |p| store.list(p.as_ref())).flatten_unordered(width);
        Ok(stream::iter(found.into_iter().map(Ok)).chain(under).boxed())
    }

    /// What a plan or a run records of this store: no credentials.
    pub fn record(&self) -> StoreRecord {
        StoreRecord { url: self.url.clone(), location: self.location.clone() }
    }

    /// `url/key`, the target string of an object.
    pub fn target(&self, key: &str) -> String {
        format!("{}/{}", self.url.trim_end_matches('/'), key)
    }

    /// The key a `target` string names in this store (the inverse of `target`), if it is one
    /// of this store's.
    pub fn key_of<'a>(&self, target: &'a str) -> Option<&'a str> {
        target.strip_prefix(self.url.trim_end_matches('/'))?.strip_prefix('/')
    }
}

/// A store key as an object_store path, refusing keys that would not round-trip exactly
/// (empty segments, `.`/`..` segments, leading or trailing `/`).
pub fn parse_key(key: &str) -> Result<ObjPath, StoreError> {
    let bad = |why: &str| StoreError::BadKey { key: key.to_string(), why: why.to_string() };
    if key.is_empty() {
        return Err(bad("it is empty"));
    }
    if key.split('/').any(|s| s == "." || s == "..") {
        return Err(bad("it contains a '.' or '..' segment"));
    }
    let p = ObjPath::parse(key).map_err(|e| bad(&e.to_string()))?;
    if p.as_ref() != key {
        return Err(bad("it does not name exactly one object (empty segments or surrounding '/')"));
    }
    Ok(p)
}

/// The outcome of deleting one key.
pub type KeyResult = Result<(), String>;

/// Delete keys in chunks of `chunk` (≤ 1,000: one DeleteObjects request each), `concurrency`
/// requests at once. Results come back in input order. A key that is already gone counts as
/// deleted (S3 reports it so; a local store's NotFound is mapped to success).
pub async fn delete_keys(
    store: &Arc<dyn ObjectStore>,
    keys: Vec<ObjPath>,
    chunk: usize,
    concurrency: usize,
) -> Vec<KeyResult> {
    let chunk = chunk.clamp(1, 1000);
    let chunks: Vec<Vec<ObjPath>> = keys.chunks(chunk).map(|c| c.to_vec()).collect();
    let results: Vec<Vec<KeyResult>> = stream::iter(chunks)
        .map(|c| {
            let store = store.clone();
            async move {
                let n = c.len();
                let input = stream::iter(c.into_iter().map(Ok)).boxed();
                let out: Vec<object_store::Result<ObjPath>> = store.delete_stream(input).collect().await;
                if out.len() == n {
                    out.into_iter().map(map_delete).collect()
                } else {
                    // The whole request failed: none of its keys is known to be deleted.
                    let why = out
                        .into_iter()
                        .find_map(|r| r.err())
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "the delete request returned an unexpected number of results".into());
                    vec![Err(why); n]
                }
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().flatten().collect()
}

fn map_delete(r: object_store::Result<ObjPath>) -> KeyResult {
    match r {
        Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::PutPayload;

    #[test]
    fn odd_keys_are_refused_or_kept_exact() {
        for bad in ["", "a//b", "/a", "a/", "a/../b", "./a"] {
            assert!(parse_key(bad).is_err(), "{bad:?} must be refused");
        }
        for good in ["clips/my clip+1.mp4", "uploads/ünï cödé.mp3", "a/b/c"] {
            assert_eq!(parse_key(good).unwrap().as_ref(), good);
        }
    }

    #[tokio::test]
    async fn list_all_lists_every_object_once_at_every_depth() {
        let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut keys = vec!["top.bin".to_string(), "a/one.bin".into(), "a/b/two.bin".into(), "a/b/c/d/deep.bin".into()];
        for i in 0..40 {
            keys.push(format!("uploads/{:02}/{i}.mp4", i % 20));
        }
        for k in &keys {
            mem.put(&ObjPath::from(k.as_str()), PutPayload::from_static(b"x")).await.unwrap();
        }
        let named = NamedStore {
            url: "memory://".into(),
            store: mem,
            location: StoreLocation::File { dir: "/".into() },
            bulk: None,
        };
        for width in [1, 2, 8, 64] {
            let mut got: Vec<String> =
                named.list_all(width).await.unwrap().map(|m| m.unwrap().location.to_string()).collect().await;
            got.sort();
            let mut want = keys.clone();
            want.sort();
            assert_eq!(got, want, "width {width}");
        }
    }

    #[tokio::test]
    async fn deletes_in_order_and_missing_is_success() {
        let s: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        for i in 0..25 {
            s.put(&ObjPath::from(format!("k/{i}")), PutPayload::from_static(b"x")).await.unwrap();
        }
        let keys: Vec<ObjPath> = (0..30).map(|i| ObjPath::from(format!("k/{i}"))).collect();
        let r = delete_keys(&s, keys, 7, 3).await;
        assert_eq!(r.len(), 30);
        assert!(r.iter().all(|x| x.is_ok()));
        assert!(s.list(None).next().await.is_none());
    }
}

/// Property tests: a key is either refused or names exactly itself, with no `.`/`..` segment.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
        #[test]
        fn a_key_is_refused_or_exact(key in "[a-z./ %+\\\\u{e9}\\\\u{1f600}-]{0,24}") {
            if let Ok(p) = parse_key(&key) {
                prop_assert_eq!(p.as_ref(), key.as_str());
                prop_assert!(!key.split('/').any(|s| s.is_empty() || s == "." || s == ".."), "{:?}", key);
            }
        }
    }
}
