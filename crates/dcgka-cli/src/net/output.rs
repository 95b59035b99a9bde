//! What `dcgka node` and `dcgka chat` print: one line per event on stdout, flushed at
//! once, as a JSON object (`--json`) or as a short line for people.
//!
//! | event | JSON fields | when |
//! |---|---|---|
//! | `ready` | `name` (`null` for a mailbox), `peer`, `role` (`device`, `mailbox`) | first line after start |
//! | `listening` | `address`, `dial` (the address with `/p2p/<peer>`, for `--peer`) | the node listens on an address |
//! | `connected`, `disconnected` | `peer` | a peer's first connection opened, its last closed |
//! | `joined` | `group` | this device created or was added to a group |
//! | `members` | `group`, `members` (names), `me` | the members changed, or `/members` |
//! | `message` | `id`, `group`, `from`, `text` | a decrypted message |
//! | `undecryptable` | `id`, `group`, `from` | a message this device may not read |
//! | `group` | `id`, `group`, `kind` | another protocol event of a group (`member_added`, `updated`, …) |
//! | `removed` | `group` | this device was removed from a group |
//! | `synced` | `peer`, `items` | a sync exchange brought items |
//! | `stocked` | `mailbox`, `one_time_prekeys` | a mailbox holds this device's prekeys (it is in the invitation now) |
//! | `stored` | `group`, `envelopes` | (mailbox) it kept envelopes of a group it serves |
//! | `misbehaved` | `peer`, `what`, `strikes` | a peer sent something invalid |
//! | `banned` | `peer` | a peer is refused from now on |
//! | `invite` | `code`, `name` | `/invite` |
//! | `groups` | `groups`, `current` | `/groups` |
//! | `ok` | `command`, `group`, `name` (add, remove) | `/add`, `/remove`, `/update`, `/send` succeeded |
//! | `help` | `commands` | `/help` |
//! | `error` | `message` | a command failed, or the node reported a failure |
//!
//! Groups are named by their full ID in hex, members by their short names. A mailbox
//! (`dcgka node --mailbox`) prints `ready`, `listening`, `connected`, `disconnected`,
//! `stored`, `misbehaved`, `banned`, `help` and `error`.

use std::io::Write;

use dcgka::events::Event;
use dcgka::ids::GroupId;
use dcgka_net::invite::hex;
use dcgka_net::{Member, NodeEvent, PeerId};
use serde_json::{Value, json};

/// What a process runs, as `ready` tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// A device (`dcgka node`, `dcgka chat`).
    Device,
    /// A mailbox (`dcgka node --mailbox`): no device, no name.
    Mailbox,
}

/// One line of output.
#[derive(Debug)]
pub(crate) enum Out {
    Ready {
        name: Option<String>,
        peer: String,
        role: Role,
    },
    Listening {
        address: String,
        peer: String,
    },
    Connected(String),
    Disconnected(String),
    Joined(GroupId),
    Members {
        gid: GroupId,
        members: Vec<Member>,
    },
    Message {
        id: u64,
        gid: GroupId,
        from: String,
        text: String,
    },
    Undecryptable {
        id: u64,
        gid: GroupId,
        from: String,
    },
    Group {
        id: u64,
        gid: GroupId,
        kind: &'static str,
    },
    Removed(GroupId),
    Synced {
        peer: String,
        items: usize,
    },
    Stocked {
        mailbox: String,
        one_time_prekeys: usize,
    },
    Stored {
        gid: GroupId,
        envelopes: usize,
    },
    Misbehaved {
        peer: String,
        what: String,
        strikes: u32,
    },
    Banned(String),
    Invite {
        code: String,
        name: String,
    },
    Groups {
        groups: Vec<GroupId>,
        current: Option<GroupId>,
    },
    Added {
        gid: GroupId,
        name: String,
    },
    RemovedMember {
        gid: GroupId,
        name: String,
    },
    Updated(GroupId),
    Sent {
        gid: GroupId,
        text: String,
    },
    /// `/help`: the commands this process takes.
    Help(&'static [(&'static str, &'static str)]),
    Error(String),
}

impl Out {
    /// The line for an event of the node whose peer ID is `local` (`None` for events of a
    /// kind this tool does not know).
    pub(crate) fn from_event(e: NodeEvent, local: &PeerId) -> Option<Out> {
        Some(match e {
            NodeEvent::Listening(a) => Out::Listening { address: a.to_string(), peer: local.to_string() },
            NodeEvent::Connected(p) => Out::Connected(p.to_string()),
            NodeEvent::Disconnected(p) => Out::Disconnected(p.to_string()),
            NodeEvent::Joined(gid) => Out::Joined(gid),
            NodeEvent::Message { id, gid, from, text, .. } => {
                Out::Message { id, gid, from, text: String::from_utf8_lossy(&text).into_owned() }
            }
            NodeEvent::Members { gid, members } => Out::Members { gid, members },
            NodeEvent::Removed(gid) => Out::Removed(gid),
            NodeEvent::Undecryptable { id, gid, from } => Out::Undecryptable { id, gid, from },
            NodeEvent::Group { id, gid, event } => Out::Group { id, gid, kind: kind(&event) },
            NodeEvent::Synced { peer, items } => Out::Synced { peer: peer.to_string(), items },
            NodeEvent::Misbehaved { peer, what, strikes } => Out::Misbehaved { peer: peer.to_string(), what, strikes },
            NodeEvent::Banned(p) => Out::Banned(p.to_string()),
            NodeEvent::Stocked { mailbox, one_time_prekeys } => {
                Out::Stocked { mailbox: mailbox.to_string(), one_time_prekeys }
            }
            NodeEvent::Stored { gid, envelopes } => Out::Stored { gid, envelopes },
            NodeEvent::Error(message) => Out::Error(message),
            _ => return None,
        })
    }

    /// The store inbox number this line confirms once printed.
    pub(crate) fn inbox_id(&self) -> Option<u64> {
        match self {
            Out::Message { id, .. } | Out::Undecryptable { id, .. } | Out::Group { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// The JSON object's fields, in order (`event` first).
    pub(crate) fn fields(&self) -> Vec<(&'static str, Value)> {
        let g = |gid: &GroupId| hex(gid.as_bytes());
        match self {
            Out::Ready { name, peer, role } => {
                let role = match role {
                    Role::Device => "device",
                    Role::Mailbox => "mailbox",
                };
                obj("ready", vec![("name", json!(name)), ("peer", json!(peer)), ("role", json!(role))])
            }
            Out::Listening { address, peer } => {
                obj("listening", vec![("address", json!(address)), ("dial", json!(dial(address, peer)))])
            }
            Out::Connected(p) => obj("connected", vec![("peer", json!(p))]),
            Out::Disconnected(p) => obj("disconnected", vec![("peer", json!(p))]),
            Out::Joined(gid) => obj("joined", vec![("group", json!(g(gid)))]),
            Out::Members { gid, members } => {
                let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
                let me = members.iter().find(|m| m.me).map(|m| m.name.as_str());
                obj("members", vec![("group", json!(g(gid))), ("members", json!(names)), ("me", json!(me))])
            }
            Out::Message { id, gid, from, text } => obj(
                "message",
                vec![("id", json!(id)), ("group", json!(g(gid))), ("from", json!(from)), ("text", json!(text))],
            ),
            Out::Undecryptable { id, gid, from } => {
                obj("undecryptable", vec![("id", json!(id)), ("group", json!(g(gid))), ("from", json!(from))])
            }
            Out::Group { id, gid, kind } => {
                obj("group", vec![("id", json!(id)), ("group", json!(g(gid))), ("kind", json!(kind))])
            }
            Out::Removed(gid) => obj("removed", vec![("group", json!(g(gid)))]),
            Out::Synced { peer, items } => obj("synced", vec![("peer", json!(peer)), ("items", json!(items))]),
            Out::Misbehaved { peer, what, strikes } => {
                obj("misbehaved", vec![("peer", json!(peer)), ("what", json!(what)), ("strikes", json!(strikes))])
            }
            Out::Banned(p) => obj("banned", vec![("peer", json!(p))]),
            Out::Stocked { mailbox, one_time_prekeys } => {
                obj("stocked", vec![("mailbox", json!(mailbox)), ("one_time_prekeys", json!(one_time_prekeys))])
            }
            Out::Stored { gid, envelopes } => {
                obj("stored", vec![("group", json!(g(gid))), ("envelopes", json!(envelopes))])
            }
            Out::Invite { code, name } => obj("invite", vec![("code", json!(code)), ("name", json!(name))]),
            Out::Groups { groups, current } => {
                let all: Vec<String> = groups.iter().map(g).collect();
                obj("groups", vec![("groups", json!(all)), ("current", json!(current.as_ref().map(g)))])
            }
            Out::Added { gid, name } => {
                obj("ok", vec![("command", json!("add")), ("group", json!(g(gid))), ("name", json!(name))])
            }
            Out::RemovedMember { gid, name } => {
                obj("ok", vec![("command", json!("remove")), ("group", json!(g(gid))), ("name", json!(name))])
            }
            Out::Updated(gid) => obj("ok", vec![("command", json!("update")), ("group", json!(g(gid)))]),
            Out::Sent { gid, .. } => obj("ok", vec![("command", json!("send")), ("group", json!(g(gid)))]),
            Out::Help(help) => {
                let commands: Vec<&str> = help.iter().map(|(c, _)| *c).collect();
                obj("help", vec![("commands", json!(commands))])
            }
            Out::Error(message) => obj("error", vec![("message", json!(message))]),
        }
    }

    /// The JSON line: an object with its fields in [`Out::fields`]' order.
    pub(crate) fn json_line(&self) -> String {
        let fields: Vec<String> =
            self.fields().into_iter().map(|(k, v)| format!("{}:{v}", Value::String(k.to_string()))).collect();
        format!("{{{}}}", fields.join(","))
    }

    /// The JSON object.
    #[cfg(test)]
    pub(crate) fn json(&self) -> Value {
        Value::Object(self.fields().into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    /// The line for people (`me` names this device); `None` for a protocol event that
    /// another line already tells (`joined`, `members`, `removed`).
    pub(crate) fn human(&self, me: &str) -> Option<String> {
        Some(match self {
            Out::Ready { name: Some(name), peer, .. } => {
                format!("* this device is {name} (peer {peer}); /help lists the commands")
            }
            Out::Ready { name: None, peer, .. } => {
                format!("* mailbox ready (peer {peer}); it holds no group key; /quit stops it")
            }
            Out::Listening { address, peer } => format!("* listening on {}", dial(address, peer)),
            Out::Connected(p) => format!("* connected to {p}"),
            Out::Disconnected(p) => format!("* disconnected from {p}"),
            Out::Joined(gid) => format!("* joined group {}", hex(gid.as_bytes())),
            Out::Members { gid, members } => {
                let names: Vec<String> =
                    members.iter().map(|m| if m.me { format!("{} (you)", m.name) } else { m.name.clone() }).collect();
                format!("* members of {gid}: {}", names.join(", "))
            }
            Out::Message { gid, from, text, .. } => format!("[{gid}] {from}: {text}"),
            Out::Undecryptable { gid, from, .. } => {
                format!("[{gid}] {from}: (a message this device may not read: it was not in the sender's view)")
            }
            Out::Group { kind, .. } if TOLD_ELSEWHERE.contains(kind) => return None,
            Out::Group { gid, kind, .. } => format!("* group {gid}: {}", kind.replace('_', " ")),
            Out::Removed(gid) => format!("* removed from group {gid}"),
            Out::Synced { peer, items } => {
                format!("* synced {items} item{} from {peer}", if *items == 1 { "" } else { "s" })
            }
            Out::Stocked { mailbox, one_time_prekeys } => {
                format!("* mailbox {mailbox} holds {one_time_prekeys} one-time prekeys of this device")
            }
            Out::Stored { gid, envelopes } => {
                format!("* stored {envelopes} envelope{} of group {gid}", if *envelopes == 1 { "" } else { "s" })
            }
            Out::Misbehaved { peer, what, strikes } => format!("! peer {peer} misbehaved ({strikes}): {what}"),
            Out::Banned(p) => format!("! peer {p} is banned"),
            Out::Invite { code, name } => format!("* invitation of {name}: {code}"),
            Out::Groups { groups, current } if !groups.is_empty() => {
                let all: Vec<String> = groups
                    .iter()
                    .map(|gid| {
                        let h = hex(gid.as_bytes());
                        if Some(gid) == current.as_ref() { format!("{h} (current)") } else { h }
                    })
                    .collect();
                format!("* groups: {}", all.join(", "))
            }
            Out::Groups { .. } => "* no groups yet: /create makes one".into(),
            Out::Added { gid, name } => format!("* added {name} to {gid}"),
            Out::RemovedMember { gid, name } => format!("* removed {name} from {gid}"),
            Out::Updated(gid) => format!("* updated this device's keys in {gid}"),
            Out::Sent { gid, text } => format!("[{gid}] {me} (you): {text}"),
            Out::Help(help) => {
                let width = help.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
                let lines: Vec<String> = help.iter().map(|(c, what)| format!("  {c:width$}  {what}")).collect();
                format!("* commands:\n{}", lines.join("\n"))
            }
            Out::Error(message) => format!("! error: {message}"),
        })
    }
}

/// An address to dial the node at: `address` with `/p2p/<peer>` (as given to `--peer`).
fn dial(address: &str, peer: &str) -> String {
    if address.contains("/p2p/") { address.to_string() } else { format!("{address}/p2p/{peer}") }
}

/// The fields of a JSON object, in order: `event` first.
fn obj(event: &'static str, mut fields: Vec<(&'static str, Value)>) -> Vec<(&'static str, Value)> {
    fields.insert(0, ("event", json!(event)));
    fields
}

/// Kinds of protocol events whose news the `joined`, `members` and `removed` lines carry.
const TOLD_ELSEWHERE: &[&str] = &["joined", "member_added", "members_removed", "removed_from_group"];

/// A short name for a protocol event's kind.
fn kind(e: &Event) -> &'static str {
    match e {
        Event::Joined { .. } => "joined",
        Event::MemberAdded { .. } => "member_added",
        Event::AddCancelled { .. } => "add_cancelled",
        Event::MembersRemoved { .. } => "members_removed",
        Event::Updated { .. } => "updated",
        Event::Message { .. } => "message",
        Event::Undecryptable { .. } => "undecryptable",
        Event::Rejected { .. } => "rejected",
        Event::Dropped { .. } => "dropped",
        Event::Equivocation { .. } => "equivocation",
        Event::StateForkSuspected { .. } => "state_fork_suspected",
        Event::DuplicateInstance { .. } => "duplicate_instance",
        Event::RemovedFromGroup { .. } => "removed_from_group",
        Event::GroupStateCorrupted { .. } => "group_state_corrupted",
        Event::HealPending => "heal_pending",
        Event::PrekeyBundleNeeded { .. } => "prekey_bundle_needed",
        Event::Misbehaviour { .. } => "misbehaviour",
        Event::LateOperation { .. } => "late_operation",
        Event::LateOperationWithheld { .. } => "late_operation_withheld",
        Event::SecretsExpired { .. } => "secrets_expired",
        Event::MemberRetired { .. } => "member_retired",
        _ => "other",
    }
}

/// Prints lines on stdout, each flushed at once so that a pipe sees it immediately.
#[derive(Debug)]
pub(crate) struct Printer {
    json: bool,
    me: String,
}

impl Printer {
    pub(crate) fn new(json: bool, me: String) -> Printer {
        Printer { json, me }
    }

    /// Writes one line and flushes it. An error means it may not have reached the reader.
    pub(crate) fn print(&self, out: &Out) -> std::io::Result<()> {
        let line = if self.json {
            out.json_line()
        } else {
            match out.human(&self.me) {
                Some(line) => line,
                None => return Ok(()),
            }
        };
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")?;
        stdout.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::commands::HELP;
    use super::*;

    #[test]
    fn json_lines_have_the_documented_fields() {
        let gid = GroupId([0xab; 32]);
        let m = Out::Message { id: 7, gid, from: "01234567".into(), text: "hi".into() };
        assert_eq!(
            m.json(),
            json!({"event": "message", "id": 7, "group": "ab".repeat(32), "from": "01234567", "text": "hi"})
        );
        assert_eq!(m.inbox_id(), Some(7));
        let line = m.json_line();
        assert!(line.starts_with(r#"{"event":"message","id":7,"group":"abab"#), "{line}");
        assert_eq!(serde_json::from_str::<Value>(&line).unwrap(), m.json());
        assert_eq!(m.human("x").as_deref(), Some("[abababab] 01234567: hi"));
        let e = Out::Error("no group zz".into());
        assert_eq!(e.json(), json!({"event": "error", "message": "no group zz"}));
        assert_eq!(e.human("x").as_deref(), Some("! error: no group zz"));
        assert_eq!(Out::Group { id: 1, gid, kind: "member_added" }.human("x"), None);
        assert_eq!(Out::Joined(gid).json()["group"], json!("ab".repeat(32)));
        assert!(Out::Help(HELP).json()["commands"].as_array().is_some_and(|c| c.len() == HELP.len()));
        let l = Out::Listening { address: "/ip4/127.0.0.1/tcp/4001".into(), peer: "12D3Koo".into() };
        assert_eq!(
            l.json(),
            json!({"event": "listening", "address": "/ip4/127.0.0.1/tcp/4001", "dial": "/ip4/127.0.0.1/tcp/4001/p2p/12D3Koo"})
        );
        let r = Out::Ready { name: None, peer: "12D3Koo".into(), role: Role::Mailbox };
        assert_eq!(r.json(), json!({"event": "ready", "name": null, "peer": "12D3Koo", "role": "mailbox"}));
        assert!(r.human("").is_some_and(|h| h.contains("mailbox")));
    }
}
