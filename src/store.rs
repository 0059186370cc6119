//! Where files and objects live: confined local roots and object stores by URL.

pub mod local;
pub mod object;

use crate::db::Db;
use anyhow::{anyhow, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// Everything a plan's items may name: the database, local roots and object stores.
#[derive(Default)]
pub struct Resources {
    pub db: Option<Arc<Db>>,
    pub roots: HashMap<String, local::LocalRoot>,
    pub stores: HashMap<String, object::NamedStore>,
}

impl Resources {
    pub fn db(&self) -> Result<&Db> {
        self.db.as_deref().ok_or_else(|| anyhow!("this plan deletes rows but no database is configured"))
    }
}
