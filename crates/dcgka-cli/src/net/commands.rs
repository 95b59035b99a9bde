//! The line commands of `dcgka chat` and `dcgka node`: parsing a line, and running it
//! against the node.
//!
//! A GROUP is any unique prefix of a group's ID in hex; where it may be left out, the
//! current group is meant (the last one created, joined or used). A MEMBER is a short
//! name. A failed command prints an `error` line and the process goes on.

use dcgka::ids::GroupId;
use dcgka_net::{Invitation, NetError, NodeHandle};

use super::output::Out;

/// The commands and what they do, for `/help`.
pub(crate) const HELP: &[(&str, &str)] = &[
    ("/create", "create a group with this device as its only member"),
    ("/invite", "print this device's invitation (give it to a member who adds you)"),
    ("/add GROUP INVITATION", "add the device of an invitation to a group"),
    ("/remove GROUP MEMBER", "remove a member (by its short name) from a group"),
    ("/update [GROUP]", "refresh this device's keys in a group (post-compromise security)"),
    ("/members [GROUP]", "list a group's members"),
    ("/send GROUP TEXT", "send the rest of the line to a group"),
    ("TEXT", "send a line without a leading / to the current group (//TEXT sends /TEXT)"),
    ("/groups", "list this device's groups"),
    ("/help", "this list"),
    ("/quit", "stop the node and exit"),
];

/// One parsed line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cmd {
    /// An empty line: nothing to do.
    Nothing,
    Create,
    Invite,
    Add {
        group: String,
        invitation: String,
    },
    Remove {
        group: String,
        member: String,
    },
    Update {
        group: Option<String>,
    },
    Members {
        group: Option<String>,
    },
    /// `group` is `None` for a plain line (the current group).
    Send {
        group: Option<String>,
        text: String,
    },
    Groups,
    Help,
    Quit,
}

/// Splits off the first word of `s` (after leading blanks): the word and the rest, whose
/// one separating blank is removed.
fn word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    Some(match s.find(char::is_whitespace) {
        Some(i) => {
            let (w, rest) = s.split_at(i);
            let sep = rest.chars().next().map_or(0, char::len_utf8);
            (w, &rest[sep..])
        }
        None => (s, ""),
    })
}

/// Reads one input line (without its line break).
pub(crate) fn parse(line: &str) -> Result<Cmd, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(Cmd::Nothing);
    }
    if let Some(text) = line.strip_prefix("//") {
        return Ok(Cmd::Send { group: None, text: format!("/{text}") });
    }
    let Some(body) = line.strip_prefix('/') else {
        return Ok(Cmd::Send { group: None, text: line.to_string() });
    };
    let (name, rest) = word(body).ok_or("an empty command: /help lists the commands")?;
    let arg = |rest: &str, what: &str| -> Result<(String, String), String> {
        let (w, tail) = word(rest).ok_or_else(|| format!("/{name} needs {what}: /help lists the commands"))?;
        Ok((w.to_string(), tail.to_string()))
    };
    let none_after = |rest: &str| -> Result<(), String> {
        if rest.trim().is_empty() { Ok(()) } else { Err(format!("/{name} takes no more arguments")) }
    };
    let optional = |rest: &str| -> Result<Option<String>, String> {
        match word(rest) {
            None => Ok(None),
            Some((w, tail)) => {
                none_after(tail)?;
                Ok(Some(w.to_string()))
            }
        }
    };
    Ok(match name {
        "create" => none_after(rest).map(|()| Cmd::Create)?,
        "invite" => none_after(rest).map(|()| Cmd::Invite)?,
        "groups" => none_after(rest).map(|()| Cmd::Groups)?,
        "help" => Cmd::Help,
        "quit" | "exit" => Cmd::Quit,
        "add" => {
            let (group, rest) = arg(rest, "a GROUP and an INVITATION")?;
            let (invitation, rest) = arg(&rest, "an INVITATION")?;
            none_after(&rest)?;
            Cmd::Add { group, invitation }
        }
        "remove" => {
            let (group, rest) = arg(rest, "a GROUP and a MEMBER")?;
            let (member, rest) = arg(&rest, "a MEMBER")?;
            none_after(&rest)?;
            Cmd::Remove { group, member }
        }
        "update" => Cmd::Update { group: optional(rest)? },
        "members" => Cmd::Members { group: optional(rest)? },
        "send" => {
            let (group, text) = arg(rest, "a GROUP and a TEXT")?;
            Cmd::Send { group: Some(group), text }
        }
        other => return Err(format!("unknown command /{other}: /help lists the commands")),
    })
}

/// What running a command gave.
#[derive(Debug, Default)]
pub(crate) struct Done {
    /// Lines to print.
    pub(crate) outs: Vec<Out>,
    /// The group that is current now, when the command named or made one.
    pub(crate) current: Option<GroupId>,
}

impl Done {
    fn one(out: Out) -> Done {
        Done { outs: vec![out], current: None }
    }
}

/// The group a command means: `given` resolved as a prefix, else the current one.
async fn group(node: &NodeHandle, given: Option<&str>, current: Option<GroupId>) -> Result<GroupId, String> {
    match given {
        Some(prefix) => node.resolve(prefix).await.map_err(|e| e.to_string()),
        None => current.ok_or_else(|| "no current group: name one, or /create one".to_string()),
    }
}

/// Runs one command (not [`Cmd::Quit`], which the caller handles).
pub(crate) async fn execute(node: NodeHandle, cmd: Cmd, current: Option<GroupId>) -> Done {
    match run(&node, cmd, current).await {
        Ok(done) => done,
        Err(message) => Done::one(Out::Error(message)),
    }
}

async fn run(node: &NodeHandle, cmd: Cmd, current: Option<GroupId>) -> Result<Done, String> {
    let err = |e: NetError| e.to_string();
    Ok(match cmd {
        Cmd::Nothing | Cmd::Quit => Done::default(),
        Cmd::Help => Done::one(Out::Help(HELP)),
        Cmd::Create => {
            // The node reports `joined` and the members itself.
            let gid = node.create().await.map_err(err)?;
            Done { outs: Vec::new(), current: Some(gid) }
        }
        Cmd::Invite => {
            let inv = node.invitation().await.map_err(err)?;
            Done::one(Out::Invite { code: inv.encode(), name: inv.name() })
        }
        Cmd::Groups => {
            let groups = node.groups().await.map_err(err)?;
            Done::one(Out::Groups { groups, current })
        }
        Cmd::Add { group: g, invitation } => {
            let gid = group(node, Some(&g), current).await?;
            let inv = Invitation::decode(&invitation).map_err(|e| format!("bad invitation: {e}"))?;
            let name = inv.name();
            node.add(gid, inv).await.map_err(err)?;
            Done { outs: vec![Out::Added { gid, name }], current: Some(gid) }
        }
        Cmd::Remove { group: g, member } => {
            let gid = group(node, Some(&g), current).await?;
            node.remove(gid, &member).await.map_err(err)?;
            Done { outs: vec![Out::RemovedMember { gid, name: member }], current: Some(gid) }
        }
        Cmd::Update { group: g } => {
            let gid = group(node, g.as_deref(), current).await?;
            node.update(gid).await.map_err(err)?;
            Done { outs: vec![Out::Updated(gid)], current: Some(gid) }
        }
        Cmd::Members { group: g } => {
            let gid = group(node, g.as_deref(), current).await?;
            let members = node.members(gid).await.map_err(err)?;
            Done { outs: vec![Out::Members { gid, members }], current: Some(gid) }
        }
        Cmd::Send { group: g, text } => {
            let gid = group(node, g.as_deref(), current).await?;
            node.send(gid, text.as_bytes()).await.map_err(err)?;
            Done { outs: vec![Out::Sent { gid, text }], current: Some(gid) }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn send(group: Option<&str>, text: &str) -> Cmd {
        Cmd::Send { group: group.map(str::to_string), text: text.to_string() }
    }

    #[test]
    fn lines_parse_into_commands() {
        assert_eq!(parse(""), Ok(Cmd::Nothing));
        assert_eq!(parse("  \r\n"), Ok(Cmd::Nothing));
        assert_eq!(parse("/create"), Ok(Cmd::Create));
        assert_eq!(parse("/invite\r"), Ok(Cmd::Invite));
        assert_eq!(parse("/quit"), Ok(Cmd::Quit));
        assert_eq!(parse("/send ab12  hello  world "), Ok(send(Some("ab12"), " hello  world ")));
        assert_eq!(parse("/send ab12"), Ok(send(Some("ab12"), "")));
        assert_eq!(parse("hello there"), Ok(send(None, "hello there")));
        assert_eq!(parse("//slash"), Ok(send(None, "/slash")));
        assert_eq!(parse("/add ab dcgka1-xyz"), Ok(Cmd::Add { group: "ab".into(), invitation: "dcgka1-xyz".into() }));
        assert_eq!(parse("/remove ab 01234567"), Ok(Cmd::Remove { group: "ab".into(), member: "01234567".into() }));
        assert_eq!(parse("/members"), Ok(Cmd::Members { group: None }));
        assert_eq!(parse("/update ab"), Ok(Cmd::Update { group: Some("ab".into()) }));
    }

    #[test]
    fn bad_lines_are_errors() {
        assert!(parse("/nope").unwrap_err().contains("unknown command /nope"));
        assert!(parse("/add ab").unwrap_err().contains("INVITATION"));
        assert!(parse("/remove").is_err());
        assert!(parse("/create now").is_err());
        assert!(parse("/members a b").is_err());
        assert!(parse("/").is_err());
    }
}
