//! `dcgka node --mailbox`: a mailbox ([`dcgka_net::spawn_mailbox`]) for the devices that
//! dial it, its mail in the data directory's `mailbox.sqlite` ([`DataDir::mailbox`]).
//!
//! A mailbox holds no group key and has no device: it keeps the envelopes of the groups
//! devices ask it to serve, Welcomes for devices that are away and their one-time
//! prekeys. Devices find out that a peer is a mailbox when they connect (its identify
//! agent), ask it to serve their groups and name it in their invitations; nothing needs
//! configuring on the mailbox's side.
//!
//! It takes the node's flags and prints the node's kinds of lines (`ready` with no name,
//! `listening` with the address to dial, connections, `stored`, strikes, errors). It stops
//! at `/quit`, SIGINT or SIGTERM, and exits 0 once its task has ended; the end of its
//! input does not stop it.

use dcgka_net::{DataDir, Multiaddr, NodeEvent, PeerId};

use super::output::{Out, Printer, Role};
use super::{NodeOpts, Signals, fail, node_config, record_listening, stdin_lines};

/// The commands a mailbox takes, for `/help`.
const MAILBOX_HELP: &[(&str, &str)] =
    &[("/help", "this list"), ("/quit", "stop the mailbox and exit (what it holds stays in its file)")];

/// Runs the mailbox of `opts`' directory until `/quit` or a signal.
pub(crate) fn run(opts: &NodeOpts) -> bool {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(opts.json, &format!("cannot start the runtime: {e}")),
    };
    match rt.block_on(serve(opts)) {
        Ok(()) => true,
        Err(message) => fail(opts.json, &message),
    }
}

async fn serve(opts: &NodeOpts) -> Result<(), String> {
    let dir = DataDir::new(&opts.data_dir).map_err(|e| e.to_string())?;
    let mailbox = dir.mailbox().map_err(|e| e.to_string())?;
    let key = dir.network_key().map_err(|e| e.to_string())?;
    let config = node_config(opts)?;
    let signals = Signals::new().map_err(|e| format!("cannot watch signals: {e}"))?;
    let (handle, events, task) = dcgka_net::spawn_mailbox(mailbox, key, config).map_err(|e| e.to_string())?;
    let mut s = Session {
        peer: handle.peer_id(),
        printer: Printer::new(opts.json, String::new()),
        dir,
        listening: Vec::new(),
        events,
    };
    s.show(&Out::Ready { name: None, peer: s.peer.to_string(), role: Role::Mailbox });
    let result = s.run(signals).await;
    while let Ok(e) = s.events.try_recv() {
        s.on_event(e);
    }
    let stopped = handle.shutdown().await;
    let joined = task.await;
    result?;
    stopped.map_err(|e| format!("stopping the mailbox: {e}"))?;
    joined.map_err(|e| format!("the mailbox task failed: {e}"))
}

struct Session {
    peer: PeerId,
    printer: Printer,
    dir: DataDir,
    listening: Vec<Multiaddr>,
    events: tokio::sync::mpsc::UnboundedReceiver<NodeEvent>,
}

impl Session {
    async fn run(&mut self, mut signals: Signals) -> Result<(), String> {
        let mut lines = stdin_lines();
        let mut stdin_open = true;
        loop {
            tokio::select! {
                e = self.events.recv() => match e {
                    Some(e) => self.on_event(e),
                    None => return Err("the mailbox stopped".into()),
                },
                line = lines.recv(), if stdin_open => match line.as_deref().map(str::trim) {
                    None => stdin_open = false,
                    Some("") => {}
                    Some("/quit" | "/exit") => return Ok(()),
                    Some("/help") => self.show(&Out::Help(MAILBOX_HELP)),
                    Some(other) => self.show(&Out::Error(format!(
                        "a mailbox takes only /help and /quit, not {}",
                        other.split_whitespace().next().unwrap_or(other)
                    ))),
                },
                () = signals.recv() => {
                    tracing::info!("signal received: stopping");
                    return Ok(());
                }
            }
        }
    }

    fn on_event(&mut self, e: NodeEvent) {
        if let NodeEvent::Listening(a) = &e {
            record_listening(&self.dir, &mut self.listening, a.clone());
        }
        if let Some(out) = Out::from_event(e, &self.peer) {
            self.show(&out);
        }
    }

    fn show(&self, out: &Out) {
        if let Err(e) = self.printer.print(out) {
            tracing::warn!("stdout: {e}");
        }
    }
}
