//! The commands that carry out a plan, each in its own module (settings, then gathering the
//! facts its pure policy decides on), and the one entry point that starts any of them from a
//! typed request: [`start`]. The CLI is one caller, `demo` another, and `serve` will be one.
//!
//! No command imports another: what two commands share lives in `gather` (facts), `policy`
//! (decisions) or `run` (the run API).

pub mod apply;
pub mod bulk_cloudcube;
pub mod cleanup_attachments;
pub mod cleanup_ops;
pub mod cleanup_ui_files;
pub mod migrate;
pub mod prune_modules;
pub mod recover;
pub mod restore;
pub mod token;
pub mod worker_once;

use crate::cli::{
    ApplyArgs, BulkCloudcubeArgs, CleanupAttachmentsArgs, CleanupOpsArgs, CleanupUiFilesArgs, Command,
    PruneModulesArgs, WorkerOnceArgs,
};
use crate::run::{Channel, Ctx, Ran, RunHandle};
use std::sync::Arc;

/// A run of one command, with its arguments.
#[derive(Debug, Clone)]
pub enum RunRequest {
    CleanupAttachments(CleanupAttachmentsArgs),
    PruneModules(PruneModulesArgs),
    CleanupUiFiles(CleanupUiFilesArgs),
    CleanupOps(CleanupOpsArgs),
    BulkCloudcube(BulkCloudcubeArgs),
    WorkerOnce(WorkerOnceArgs),
    Apply(ApplyArgs),
}

impl RunRequest {
    /// The run a parsed command line stands for; `None` for commands that are not runs
    /// (`migrate`, `restore`, `status`, …).
    /// The command's name, as `Command::name` gives it.
    pub fn name(&self) -> &'static str {
        match self {
            RunRequest::CleanupAttachments(_) => "cleanup-attachments",
            RunRequest::PruneModules(_) => "prune-modules",
            RunRequest::CleanupUiFiles(_) => "cleanup-ui-files",
            RunRequest::CleanupOps(_) => "cleanup-ops",
            RunRequest::BulkCloudcube(_) => "bulk-cloudcube",
            RunRequest::WorkerOnce(_) => "worker-once",
            RunRequest::Apply(_) => "apply",
        }
    }

    pub fn of(command: Command) -> Option<RunRequest> {
        Some(match command {
            Command::CleanupAttachments(a) => RunRequest::CleanupAttachments(a),
            Command::PruneModules(a) => RunRequest::PruneModules(a),
            Command::CleanupUiFiles(a) => RunRequest::CleanupUiFiles(a),
            Command::WorkerOnce(a) => RunRequest::WorkerOnce(a),
            Command::BulkCloudcube(a) => RunRequest::BulkCloudcube(a),
            Command::CleanupOps(a) => RunRequest::CleanupOps(a),
            Command::Apply(a) => RunRequest::Apply(a),
            Command::Migrate
            | Command::Restore(_)
            | Command::Demo(_)
            | Command::Status(_)
            | Command::Recover(_)
            | Command::Serve(_)
            | Command::Token(_) => return None,
        })
    }
}

/// How many events a watcher may fall behind by before it loses the oldest.
const EVENTS: usize = 4096;

/// Start a run: the same lock, policy, executor, caps, audit and backups whoever asks.
pub fn start(ctx: Arc<Ctx>, request: RunRequest) -> RunHandle {
    RunHandle::spawn(EVENTS, move |chan| async move { run(&ctx, &request, &chan).await })
}

/// Carry out a request on this task (what [`start`] runs).
pub async fn run(ctx: &Ctx, request: &RunRequest, chan: &Channel) -> anyhow::Result<Ran> {
    match request {
        RunRequest::CleanupAttachments(a) => cleanup_attachments::run(ctx, a, chan).await,
        RunRequest::PruneModules(a) => prune_modules::run(ctx, a, chan).await,
        RunRequest::CleanupUiFiles(a) => cleanup_ui_files::run(ctx, a, chan).await,
        RunRequest::CleanupOps(a) => cleanup_ops::run(ctx, a, chan).await,
        RunRequest::BulkCloudcube(a) => bulk_cloudcube::run(ctx, a, chan).await,
        RunRequest::WorkerOnce(a) => worker_once::run(ctx, a, chan).await,
        RunRequest::Apply(a) => apply::run(ctx, a, chan).await,
    }
}
