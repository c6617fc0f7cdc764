//! `stepwise keys create|list|revoke`, on the database file: keys are administered where
//! the server's data lives, not over the API they protect.

use clap::{Args, Subcommand};
use serde_json::json;

use super::Outcome;
use super::local::DbArgs;
use crate::store::{ApiKeyInfo, ApiKeyRecord};

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
        /// What the key is for, shown by `keys list` (e.g. `ci`).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List the keys of every workspace: id (the key's first characters), name, workspace,
    /// when created and revoked. The keys themselves are not stored.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke a key: a running server refuses it from its next request on.
    Revoke {
        /// The key's id as `keys list` shows it (e.g. `stw_1a2b3c`), or the whole key.
        id: String,
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
    let result = match &args.command {
        KeysCommand::Create {
            workspace,
            name,
            db,
        } => create(workspace, name.as_deref(), db),
        KeysCommand::List { json, db } => list(*json, db),
        KeysCommand::Revoke { id, db } => revoke(id, db),
    };
    match result {
        Ok(()) => Outcome::Ok,
        Err(e) => {
            eprintln!("error: {e}");
            Outcome::CouldNotRun
        }
    }
}

fn open(db: &DbArgs) -> Result<std::sync::Arc<dyn crate::store::Store>, String> {
    db.open_store()
}

fn create(workspace: &str, name: Option<&str>, db: &DbArgs) -> Result<(), String> {
    let ws = workspace_id(workspace)?;
    if name.is_some_and(|n| n.trim().is_empty() || n.chars().count() > 100) {
        return Err("--name must be 1 to 100 characters".into());
    }
    let store = open(db)?;
    let key = crate::api::new_key();
    let rec = ApiKeyRecord {
        hash: crate::api::hash_key(&key),
        workspace_id: ws.clone(),
        prefix: key.chars().take(10).collect(),
        created_at: jiff::Timestamp::now(),
    };
    store
        .put_named_api_key(&rec, name)
        .map_err(|e| e.to_string())?;
    eprintln!(
        "created key {} for workspace {ws}; the key is shown only now:",
        rec.prefix
    );
    println!("{key}");
    Ok(())
}

fn time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn list(json: bool, db: &DbArgs) -> Result<(), String> {
    let keys = open(db)?.api_keys().map_err(|e| e.to_string())?;
    if json {
        let rows: Vec<_> = keys
            .iter()
            .map(|k| {
                json!({
                    "id": k.prefix,
                    "name": k.name,
                    "workspace": k.workspace_id,
                    "createdAt": time(k.created_at),
                    "revokedAt": k.revoked_at.map(time),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let mut rows = vec![
        ["ID", "NAME", "WORKSPACE", "CREATED", "REVOKED"]
            .map(String::from)
            .to_vec(),
    ];
    for k in &keys {
        rows.push(vec![
            k.prefix.clone(),
            k.name.clone().unwrap_or_else(|| "-".into()),
            k.workspace_id.clone(),
            time(k.created_at),
            k.revoked_at.map_or_else(|| "-".into(), time),
        ]);
    }
    print!("{}", super::table::columns(&rows));
    if keys.is_empty() {
        eprintln!("no API keys: create one with `stepwise keys create --workspace NAME`");
    }
    Ok(())
}

/// The one key `id` names: the whole key, or a prefix `keys list` showed. Prefixes are
/// short, so two keys may share one; then only the whole key can say which.
fn find<'a>(keys: &'a [ApiKeyInfo], id: &str) -> Result<&'a ApiKeyInfo, String> {
    let hash = crate::api::hash_key(id);
    if let Some(k) = keys.iter().find(|k| k.hash == hash) {
        return Ok(k);
    }
    let matches: Vec<&ApiKeyInfo> = keys.iter().filter(|k| k.prefix == id).collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "no API key `{id}`: give an id from `stepwise keys list` or the whole key"
        )),
        many => Err(format!(
            "{} keys start with `{id}`: give the whole key to revoke one of them",
            many.len()
        )),
    }
}

fn revoke(id: &str, db: &DbArgs) -> Result<(), String> {
    let store = open(db)?;
    let keys = store.api_keys().map_err(|e| e.to_string())?;
    let key = find(&keys, id.trim())?;
    if let Some(at) = key.revoked_at {
        eprintln!("key {} was already revoked at {}", key.prefix, time(at));
        return Ok(());
    }
    store
        .revoke_api_key(&key.hash, jiff::Timestamp::now())
        .map_err(|e| e.to_string())?;
    eprintln!(
        "revoked key {} (workspace {}); servers refuse it from now on",
        key.prefix, key.workspace_id
    );
    Ok(())
}
