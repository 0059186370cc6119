//! Shared test support: the real binary, a temporary PostgreSQL cluster, SQLite files, and an
//! S3-protocol server (s3s-fs, in-process on 127.0.0.1) that the tests start themselves.

use chrono::{DateTime, Utc};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, S3};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::SystemTime;
use sweep::config::DatabaseUrl;
use sweep::db::Db;
use sweep_testkit::{MariaDb, PgCluster};

pub const S3_ACCESS: &str = "sweep-test-access";
pub const S3_SECRET: &str = "sweep-test-secret-do-not-print";
/// Buckets whose name starts with this do not exist: a PUT into one fails with NoSuchBucket.
pub const MISSING_BUCKET: &str = "no-such-bucket";
/// Keys containing this marker fail in DeleteObjects with AccessDenied.
pub const UNDELETABLE: &str = "undeletable";
/// Buckets whose name starts with this are flaky: of every eight requests to one, one fails
/// with 503 SlowDown before the server acts, one fails with 500 after it acted (the answer is
/// lost, as with a connection reset), and one is answered 300 ms late.
pub const FAULTY: &str = "faulty-";

/// The database engines, as sweep names them (`name()` is what a plan records).
pub use sweep::db::Backend;

/// A short tag, to keep buckets and names apart between backends.
pub trait Tag {
    fn tag(self) -> &'static str;
}

impl Tag for Backend {
    fn tag(self) -> &'static str {
        match self {
            Backend::Postgres => "pg",
            Backend::Sqlite => "lite",
            Backend::MySql => "my",
        }
    }
}

/// A workspace: a database with the reference schema, a media root, a scratch dir.
pub struct Ws {
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub media: PathBuf,
}

impl Ws {
    /// A fresh database with the reference schema; `migrated` also creates sweep's tables.
    pub async fn new(backend: Backend, migrated: bool) -> Ws {
        let dir = tempfile::tempdir().unwrap();
        let url = match backend {
            Backend::Postgres => PgCluster::shared().new_database(),
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("app.db").display()),
            Backend::MySql => MariaDb::shared().new_database(),
        };
        let media = dir.path().join("media");
        std::fs::create_dir_all(&media).unwrap();
        let db = Db::connect(&DatabaseUrl::new(url.clone()), true).await.unwrap();
        sweep::reference::create(&db).await.unwrap();
        if migrated {
            db.migrate().await.unwrap();
        }
        db.close().await;
        Ws { backend, dir, url, media }
    }

    pub async fn db(&self) -> Db {
        Db::connect(&DatabaseUrl::new(self.url.clone()), false).await.unwrap()
    }

    /// Run SQL written so that every backend accepts it (see `for_backend`).
    pub async fn exec(&self, sql: &str) {
        let db = self.db().await;
        let sql = for_backend(sql, self.backend);
        db.execute_script(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e:#}"));
        db.close().await;
    }

    /// One integer from a query.
    pub async fn count(&self, sql: &str) -> i64 {
        let db = self.db().await;
        let sql = for_backend(sql, self.backend);
        let n = db.fetch_one_int(&db.raw(&sql)).await.unwrap_or_else(|e| panic!("{sql}: {e:#}"));
        db.close().await;
        n
    }

    /// Every row of a query, each column read as text.
    pub async fn text_rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let db = self.db().await;
        let sql = for_backend(sql, self.backend);
        let rows = db.fetch_all(&db.raw(&sql)).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        let out = rows.iter().map(|r| (0..r.len()).map(|i| r.text(i).unwrap()).collect()).collect();
        db.close().await;
        out
    }

    /// Run the binary with this workspace's database and media root.
    pub fn sweep(&self, args: &[&str]) -> Run {
        self.sweep_env(args, &[])
    }

    pub fn sweep_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut all = vec![("DATABASE_URL", self.url.as_str()), ("MEDIA_ROOT", self.media.to_str().unwrap())];
        all.extend_from_slice(env);
        sweep_in(self.dir.path(), args, &all)
    }

    /// Write a file under the media root, last modified at `mtime`.
    pub fn file(&self, rel: &str, bytes: usize, mtime: DateTime<Utc>) -> PathBuf {
        let p = self.media.join(rel);
        write_aged(&p, bytes, mtime);
        p
    }
}

/// Write `bytes` bytes at `p`, last modified at `mtime`.
pub fn write_aged(p: &Path, bytes: usize, mtime: DateTime<Utc>) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, vec![b'x'; bytes]).unwrap();
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_modified(SystemTime::from(mtime)).unwrap();
}

/// What a run of the binary did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
    #[track_caller]
    pub fn expect(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "exit code\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

/// A clean environment for the binary: `PATH`, and plans that go to a temporary file past a
/// few items (`SWEEP_SPILL_AT`, 4 unless the environment says otherwise) and references sorted
/// on disk past 100 bytes (`SWEEP_REFS_SPILL_AT`), so that the suite runs the on-disk paths as
/// much as the in-memory ones.
pub fn clean_env(c: &mut Command) -> &mut Command {
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SWEEP_SPILL_AT", std::env::var("SWEEP_SPILL_AT").unwrap_or_else(|_| "4".into()))
        .env("SWEEP_REFS_SPILL_AT", std::env::var("SWEEP_REFS_SPILL_AT").unwrap_or_else(|_| "100".into()))
}

/// The real binary, with a clean environment (`clean_env`).
pub fn sweep_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sweep"));
    clean_env(&mut c);
    c
}

/// Run the real binary in `cwd` with a clean environment plus `env`.
pub fn sweep_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = sweep_command();
    c.current_dir(cwd).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out: Output = c.output().expect("the sweep binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// The S3-protocol server

/// s3s-fs on 127.0.0.1, shared by the test process; buckets are directories under `root`.
pub struct S3Server {
    pub endpoint: String,
    pub root: PathBuf,
}

static S3: OnceLock<S3Server> = OnceLock::new();

impl S3Server {
    pub fn shared() -> &'static S3Server {
        S3.get_or_init(start_s3)
    }

    /// A new empty bucket.
    pub fn bucket(&self, name: &str) -> PathBuf {
        let p = self.root.join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Put an object by writing its backing file, with `mtime` as its last-modified time.
    pub fn put(&self, bucket: &str, key: &str, bytes: usize, mtime: DateTime<Utc>) {
        write_aged(&self.root.join(bucket).join(key), bytes, mtime);
    }

    pub fn exists(&self, bucket: &str, key: &str) -> bool {
        self.root.join(bucket).join(key).exists()
    }

    /// The environment that points sweep at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OBJECT_STORAGE_ENDPOINT", self.endpoint.clone()),
            ("OBJECT_STORAGE_REGION", "us-east-1".into()),
            ("OBJECT_STORAGE_ACCESS_KEY", S3_ACCESS.into()),
            ("OBJECT_STORAGE_SECRET_KEY", S3_SECRET.into()),
        ]
    }
}

fn start_s3() -> S3Server {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder as ConnBuilder;
    remove_stale_s3_roots();
    let root = std::env::temp_dir().join(format!("sweep-s3-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let fs = s3s_fs::FileSystem::new(&root).expect("s3s-fs root");
    let service = {
        let mut b = s3s::service::S3ServiceBuilder::new(Flaky(fs));
        b.set_auth(s3s::auth::SimpleAuth::from_single(S3_ACCESS, S3_SECRET));
        b.build()
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
    });
    S3Server { endpoint: format!("http://{addr}"), root }
}

/// Earlier test processes cannot remove their S3 root (statics are not dropped at exit):
/// remove those whose process is gone.
fn remove_stale_s3_roots() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("sweep-s3-") {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Deletion requests the test server received for one bucket, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requests {
    /// Keys in each DeleteObjects request, in order.
    pub delete_objects: Vec<usize>,
    /// DeleteObject (one key) requests.
    pub delete_object: usize,
}

static REQUESTS: std::sync::Mutex<Option<std::collections::HashMap<String, Requests>>> = std::sync::Mutex::new(None);

/// What the fault injector does to one request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// 503 SlowDown, nothing done.
    Before,
    /// Done, then 500: the client does not learn it was done.
    After,
    /// Answered late.
    Slow,
}

static FAULT_SEQ: std::sync::Mutex<Option<std::collections::HashMap<String, u64>>> = std::sync::Mutex::new(None);

fn fault(bucket: &str) -> Fault {
    if !bucket.starts_with(FAULTY) {
        return Fault::None;
    }
    let mut g = FAULT_SEQ.lock().unwrap();
    let n = g.get_or_insert_with(Default::default).entry(bucket.to_string()).or_default();
    *n += 1;
    match *n % 8 {
        1 => Fault::Before,
        4 => Fault::After,
        6 => Fault::Slow,
        _ => Fault::None,
    }
}

/// Run one request through the fault injector.
async fn flaky<T>(bucket: &str, act: impl std::future::Future<Output = S3Result<T>>) -> S3Result<T> {
    let f = fault(bucket);
    if f == Fault::Before {
        return Err(s3s::s3_error!(SlowDown));
    }
    if f == Fault::Slow {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let out = act.await;
    if f == Fault::After {
        return Err(s3s::s3_error!(InternalError));
    }
    out
}

fn count(bucket: &str, f: impl FnOnce(&mut Requests)) {
    let mut g = REQUESTS.lock().unwrap();
    f(g.get_or_insert_with(Default::default).entry(bucket.to_string()).or_default());
}

impl S3Server {
    /// How many requests a `FAULTY` bucket received (one in eight failed before acting, one
    /// in eight after).
    pub fn faulty_requests(&self, bucket: &str) -> u64 {
        FAULT_SEQ.lock().unwrap().as_ref().and_then(|m| m.get(bucket).copied()).unwrap_or(0)
    }

    /// The deletion requests `bucket` received so far.
    pub fn requests(&self, bucket: &str) -> Requests {
        REQUESTS.lock().unwrap().as_ref().and_then(|m| m.get(bucket).cloned()).unwrap_or_default()
    }
}

/// s3s-fs, except that keys containing `UNDELETABLE` fail in DeleteObjects, and deletion
/// requests are counted by kind.
struct Flaky(s3s_fs::FileSystem);

#[async_trait::async_trait]
impl S3 for Flaky {
    async fn delete_objects(
        &self,
        mut req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        count(&req.input.bucket, |r| r.delete_objects.push(req.input.delete.objects.len()));
        let (bad, good): (Vec<ObjectIdentifier>, Vec<ObjectIdentifier>) =
            req.input.delete.objects.drain(..).partition(|o| o.key.contains(UNDELETABLE));
        req.input.delete.objects = good;
        let b = req.input.bucket.clone();
        let mut resp = flaky(&b, self.0.delete_objects(req)).await?;
        if !bad.is_empty() {
            resp.output.errors = Some(
                bad.into_iter()
                    .map(|o| Error {
                        key: Some(o.key),
                        code: Some("AccessDenied".into()),
                        message: Some("Access Denied".into()),
                        ..Default::default()
                    })
                    .collect(),
            );
        }
        Ok(resp)
    }
    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        count(&req.input.bucket, |r| r.delete_object += 1);
        if req.input.key.contains(UNDELETABLE) {
            return Err(s3s::s3_error!(AccessDenied));
        }
        let b = req.input.bucket.clone();
        flaky(&b, self.0.delete_object(req)).await
    }
    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let b = req.input.bucket.clone();
        flaky(&b, self.0.head_object(req)).await
    }
    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let b = req.input.bucket.clone();
        flaky(&b, self.0.get_object(req)).await
    }
    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        // S3 refuses a PUT into a bucket that does not exist; s3s-fs would create it.
        if req.input.bucket.starts_with(MISSING_BUCKET) {
            return Err(s3s::s3_error!(NoSuchBucket));
        }
        let b = req.input.bucket.clone();
        flaky(&b, self.0.put_object(req)).await
    }
    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        self.0.copy_object(req).await
    }
    async fn list_objects_v2(
        &self,
        mut req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        // S3 treats `delimiter=` (empty, as rclone sends for recursive listings) as no delimiter;
        // s3s-fs 0.14 does not.
        if req.input.delimiter.as_deref() == Some("") {
            req.input.delimiter = None;
        }
        let b = req.input.bucket.clone();
        flaky(&b, self.0.list_objects_v2(req)).await
    }
    async fn list_objects(&self, mut req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        if req.input.delimiter.as_deref() == Some("") {
            req.input.delimiter = None;
        }
        self.0.list_objects(req).await
    }
    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        self.0.create_bucket(req).await
    }
    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.0.head_bucket(req).await
    }
    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        self.0.list_buckets(req).await
    }
}

/// Test SQL as a backend takes it. The tests write SQL once, with instants as RFC 3339 text
/// in UTC (`ts`) and `CAST(x AS TEXT)`; MySQL's `DATETIME` takes no offset and its `CAST`
/// knows no `TEXT`, so for MySQL those two are rewritten here (tests only: sweep itself binds
/// instants and writes its casts through its dialect).
pub fn for_backend(sql: &str, b: Backend) -> String {
    if b != Backend::MySql {
        return sql.to_string();
    }
    let sql = sql.replace(" AS TEXT)", " AS CHAR)");
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < bytes.len() {
        // '2026-11-22T10:00:00[.fff]+00:00' -> '2026-11-22 10:00:00[.fff]'
        if bytes[i] == b'\'' && i + 21 <= bytes.len() && is_ts_start(&bytes[i + 1..]) {
            let end = sql[i + 1..].find('\'').map(|e| i + 1 + e);
            if let Some(end) = end {
                let inner = &sql[i + 1..end];
                if let Ok(t) = DateTime::parse_from_rfc3339(inner) {
                    out.push('\'');
                    out.push_str(&t.with_timezone(&Utc).format("%Y-%m-%d %H:%M:%S%.6f").to_string());
                    out.push('\'');
                    i = end + 1;
                    continue;
                }
            }
        }
        let ch = sql[i..].chars().next().unwrap();
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn is_ts_start(b: &[u8]) -> bool {
    b.len() >= 19
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
}

/// An instant as RFC 3339 text every database accepts in test SQL (see `for_backend`).
pub fn ts(t: DateTime<Utc>) -> String {
    format!("'{}'", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false))
}

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}
