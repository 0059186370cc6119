//! The reference schema of SPEC §4.1, for tests, benchmarks and `demo`. sweep never creates it
//! in a user's database.

use crate::db::Db;
use anyhow::Result;

pub const POSTGRES: &str = include_str!("../schema/reference_postgres.sql");
pub const SQLITE: &str = include_str!("../schema/reference_sqlite.sql");
pub const MYSQL: &str = include_str!("../schema/reference_mysql.sql");

/// Create the reference tables.
pub async fn create(db: &Db) -> Result<()> {
    db.execute_script(db.by_backend(POSTGRES, SQLITE, MYSQL)).await
}
