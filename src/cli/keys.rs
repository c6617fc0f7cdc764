//! `stepwise keys create --workspace NAME`

use clap::{Args, Subcommand};

use super::Outcome;
use super::local::DbArgs;
use crate::store::{ApiKeyRecord, SqliteStore, Store};

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create an API key for a workspace and print it (only this once: it is stored hashed).
    Create {
        /// The workspace the key acts in (`default` is the one `--insecure-no-auth` uses).
        #[arg(long, default_value = "default")]
        workspace: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

/// `default` → `ws_default`: workspace ids carry a prefix like every other id.
pub fn workspace_id(name: &str) -> Result<String, String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(format!(
            "`{name}` is not a workspace name: use letters, digits, `-` and `_`"
        ));
    }
    Ok(if name.starts_with("ws_") {
        name.to_string()
    } else {
        format!("ws_{name}")
    })
}

pub fn run(args: &KeysArgs) -> Outcome {
    match &args.command {
        KeysCommand::Create { workspace, db } => {
            let ws = match workspace_id(workspace) {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Outcome::CouldNotRun;
                }
            };
            let store = match SqliteStore::open(&db.db, db.synchronous) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Outcome::CouldNotRun;
                }
            };
            let key = crate::api::new_key();
            let rec = ApiKeyRecord {
                hash: crate::api::hash_key(&key),
                workspace_id: ws.clone(),
                prefix: key.chars().take(10).collect(),
                created_at: jiff::Timestamp::now(),
            };
            if let Err(e) = store.put_api_key(&rec) {
                eprintln!("error: {e}");
                return Outcome::CouldNotRun;
            }
            eprintln!("created a key for workspace {ws}; it is shown only now:");
            println!("{key}");
            Outcome::Ok
        }
    }
}
