//! `talkwai keys`: the personal-data key store for operators: a new master key, its rotation,
//! a backup of the wrapped keys and its restore, and the destruction of one data subject's key.

use std::io::BufRead as _;

use talkwai_keys::backup::KeyLine;
use talkwai_keys::{KeyArgs, KeyStore, MasterKey};
use talkwai_proto::Scope;

use crate::cli::{DestroyKeyArgs, KeysCommand};
use crate::error::CliError;
use crate::events;
use crate::output::line;

/// Runs one `talkwai keys` subcommand.
pub async fn run(nats_url: &str, keys: &KeyArgs, command: KeysCommand) -> Result<(), CliError> {
    if let KeysCommand::NewMaster = command {
        let (master, text) = MasterKey::generate();
        line(&text)?;
        eprintln!("master key id {}", master.id());
        return Ok(());
    }
    let client = crate::connect(nats_url).await?;
    let store = events::key_store(&client, keys).await?.ok_or_else(|| {
        CliError::Usage("no master key: set TALKWAI_MASTER_KEY or TALKWAI_MASTER_KEY_FILE".into())
    })?;
    match command {
        KeysCommand::NewMaster => Ok(()),
        KeysCommand::RotateMaster => {
            let count = store.rotate_master().await.map_err(keys_error)?;
            line(&format!(
                "re-wrapped {count} tenant keys under master key {}",
                store.master_id()
            ))
        }
        KeysCommand::Export => {
            for (name, value) in store.export().await.map_err(keys_error)? {
                let text = serde_json::to_string(&KeyLine::new(name, &value))
                    .map_err(|e| CliError::Nats(e.to_string()))?;
                line(&text)?;
            }
            Ok(())
        }
        KeysCommand::Import => import(&store).await,
        KeysCommand::Destroy(args) => destroy(&store, args).await,
    }
}

fn keys_error(e: talkwai_keys::KeyError) -> CliError {
    CliError::Nats(e.to_string())
}

async fn import(store: &KeyStore) -> Result<(), CliError> {
    let mut entries = Vec::new();
    for (index, text) in std::io::stdin().lock().lines().enumerate() {
        let text = text.map_err(|e| CliError::Usage(format!("stdin: {e}")))?;
        if text.trim().is_empty() {
            continue;
        }
        let entry: KeyLine = serde_json::from_str(&text)
            .map_err(|e| CliError::Usage(format!("line {}: {e}", index + 1)))?;
        entries.push(
            entry
                .entry()
                .map_err(|e| CliError::Usage(format!("line {}: {e}", index + 1)))?,
        );
    }
    let total = entries.len();
    let restored = store.restore(entries).await?;
    line(&format!(
        "restored {} of {total} keys ({} were there, {} destroyed here stay destroyed)",
        restored.written, restored.present, restored.destroyed
    ))
}

async fn destroy(store: &KeyStore, args: DestroyKeyArgs) -> Result<(), CliError> {
    let scope = Scope::parse(&args.scope).map_err(|e| CliError::Usage(e.to_string()))?;
    store.destroy(scope, args.key).await.map_err(keys_error)?;
    line(&format!(
        "destroyed key {} of {}: its fields read as erased",
        args.key, args.scope
    ))
}
