//! `stepwise migrate-store --from stepwise.db --to postgres://…`: copy an SQLite store into
//! PostgreSQL (docs/scale-out.md, "Moving from SQLite"). The copy itself is
//! `store::migrate`; this layer checks the arguments, holds the source's engine lock and
//! prints the counts.

use std::path::PathBuf;

use clap::Args;

use super::Outcome;
use super::local::{self, DbArgs};
use crate::store::migrate::{self, Existing, MigrateError};
use crate::store::{PgOptions, PgStore, Synchronous, is_postgres_url};

#[derive(Debug, Args)]
pub struct MigrateStoreArgs {
    /// The SQLite database to copy (read only; no server may run on it meanwhile).
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// The PostgreSQL database to copy into (`postgres://user@host:port/db`); its schema is
    /// created or brought up to date first.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Replace whatever the target already holds (without it, a target with data is refused).
    #[arg(long)]
    pub force: bool,
    /// Print the counts as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &MigrateStoreArgs) -> Outcome {
    match migrate_store(args) {
        Ok(()) => Outcome::Ok,
        Err(e) => {
            eprintln!("error: {e}");
            Outcome::CouldNotRun
        }
    }
}

fn migrate_store(args: &MigrateStoreArgs) -> Result<(), String> {
    if !is_postgres_url(&args.to) {
        return Err(format!(
            "--to {}: expected a PostgreSQL URL (postgres://user@host:port/db)",
            args.to
        ));
    }
    let target_name = DbArgs {
        db: PathBuf::from(&args.to),
        synchronous: Synchronous::Full,
        db_pool: 2,
        lease: "10s".to_string(),
    }
    .describe();
    // The engine lock, held for the whole copy: a server or worker on the file would keep
    // writing after the snapshot, and none may start while we read.
    let conn = migrate::open_source(&args.from).map_err(|e| e.to_string())?;
    let _lock = local::try_lock(&args.from)?.map_err(|holder| {
        format!(
            "{} runs the engine on {}; stop it before copying the store",
            local::describe(&holder),
            args.from.display()
        )
    })?;
    let mut opts = PgOptions::new(&args.to);
    opts.pool_size = 2;
    let target = PgStore::open(&opts).map_err(|e| format!("--to {target_name}: {e}"))?;
    let existing = if args.force {
        Existing::Replace
    } else {
        Existing::Refuse
    };
    eprintln!("copying {} into {target_name}", args.from.display());
    let report = migrate::copy(&conn, &target, existing).map_err(|e| match e {
        MigrateError::TargetNotEmpty(_) => format!("--to {target_name}: {e}"),
        other => format!("{other}; the target is unchanged"),
    })?;
    if args.json {
        let counts: serde_json::Map<String, serde_json::Value> = report
            .tables
            .iter()
            .map(|(t, n)| ((*t).to_string(), (*n).into()))
            .collect();
        println!(
            "{}",
            serde_json::json!({ "tables": counts, "verified": true })
        );
    } else {
        let mut rows = vec![vec!["TABLE".to_string(), "ROWS".to_string()]];
        rows.extend(
            report
                .tables
                .iter()
                .map(|(t, n)| vec![(*t).to_string(), n.to_string()]),
        );
        print!("{}", super::table::columns(&rows));
        eprintln!(
            "copied and verified (row counts match); start `stepwise serve --db {target_name}`"
        );
    }
    Ok(())
}
