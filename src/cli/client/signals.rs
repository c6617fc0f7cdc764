//! `signals send`: deliver a signal by type and correlation value to every run waiting for
//! it (`POST /v1/signals`), against `--server` or the embedded store like `runs resume`.

use clap::{Args, Subcommand};
use serde_json::json;

use super::backend::Access;
use super::print::print_reply;
use super::{ClientArgs, with_backend};
use crate::cli::Outcome;
use crate::cli::run::read_json_arg;

#[derive(Debug, Args)]
pub struct SignalsArgs {
    #[command(subcommand)]
    command: SignalsCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Subcommand)]
enum SignalsCommand {
    /// Deliver a signal to every run whose external_event step waits for this type and
    /// correlation value; with none waiting it is kept for steps with `buffer`.
    #[command(
        override_usage = "stepwise signals send --type TYPE --correlate VALUE [--payload JSON] [--idempotency-key KEY]"
    )]
    Send {
        /// The signal type, e.g. payment.confirmed.
        #[arg(long = "type", value_name = "TYPE")]
        signal_type: String,
        /// The value the waiting steps' `correlate:` rendered, e.g. an order id.
        #[arg(long, value_name = "VALUE")]
        correlate: String,
        /// JSON, or @FILE; checked against each reached step's schema.
        #[arg(long, default_value = "{}")]
        payload: String,
        /// Deliver it once: the same key again delivers nothing and answers what the
        /// first delivery did.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
}

pub fn signals(args: &SignalsArgs) -> Outcome {
    let SignalsCommand::Send {
        signal_type,
        correlate,
        payload,
        idempotency_key,
    } = &args.command;
    let payload = match read_json_arg(payload, "--payload") {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Outcome::CouldNotRun;
        }
    };
    let mut body = json!({"signalType": signal_type, "correlate": correlate, "payload": payload});
    if let Some(k) = idempotency_key {
        body["idempotencyKey"] = json!(k);
    }
    with_backend(&args.client, Access::Run, |backend| async move {
        let reply = backend
            .call(
                "POST",
                "/v1/signals",
                Some(("application/json", body.to_string())),
            )
            .await?;
        Ok(print_reply(&reply, args.client.output, false, "run"))
    })
}
