//! `dcgka demo`: the paper's story, narrated. A group is created; a network partition
//! splits it; each side adds, removes, updates and chats; the partition heals; every
//! device converges. Ends with a verification block checked by the simulator's oracles.
//!
//! Every device keeps its state in its own SQLite store (`dcgka-store`), one file per
//! device in the data directory. Run again on the same directory, the demo resumes the
//! devices from their files instead, and every device still in the group writes once more:
//! they still read each other.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Args;
use dcgka::events::Event;
use dcgka::group::{GroupConfig, Status};
use dcgka::ids::MemberId;
use dcgka_sim::names::{A, B, C, D, E, F, G};
use dcgka_sim::stores::{PersistentStore, SimStore};
use dcgka_sim::{Dev, Sim, name_of, oracle};
use dcgka_store::{StorageKey, Store};

use crate::stores::{DiskStore, demo_key, device_path, key_path, thousands};

/// Options of `dcgka demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Seed of the demo's randomness (keys); the story is the same for every seed.
    #[arg(long, default_value_t = 2021)]
    seed: u64,
    /// Keep each device in its own SQLite file in DIR (default: a temporary directory,
    /// deleted at the end). Run again with the same DIR to resume the devices from disk.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

const DEVICES: usize = 7;

struct Demo {
    sim: Sim,
    /// Per device: how many of its events were narrated already.
    cursor: Vec<usize>,
    /// Every check of the verification block: (description, holds).
    checks: Vec<(String, bool)>,
}

impl Demo {
    fn name(&self, d: Dev) -> &str {
        &self.sim.devices[d].name
    }

    /// The device name behind a member instance, also for instances whose device has not
    /// joined yet (resolved through the identity key any device's group knows).
    fn who(&self, m: &MemberId) -> String {
        if self.sim.device_of(m).is_some() {
            return self.sim.name_of_member(m);
        }
        let ik = self
            .sim
            .devices
            .iter()
            .flat_map(|d| d.group().into_iter().chain(d.retired.iter()))
            .find_map(|g| g.identity_of(m));
        match ik.and_then(|ik| (0..self.sim.devices.len()).find(|d| self.sim.ik(*d) == ik)) {
            Some(d) => self.sim.devices[d].name.clone(),
            None => self.sim.name_of_member(m),
        }
    }

    fn names(&self, ids: &BTreeSet<MemberId>) -> String {
        let v: Vec<String> = ids.iter().map(|m| self.who(m)).collect::<BTreeSet<_>>().into_iter().collect();
        format!("{{{}}}", v.join(", "))
    }

    fn phase(&self, title: &str) {
        println!();
        println!("== {title} ==");
    }

    fn say(&self, line: &str) {
        println!("  {line}");
    }

    /// Reports a failed or refused operation (which the demo does not expect).
    fn expect_ok<T, E: std::fmt::Debug>(&mut self, what: &str, r: Result<T, E>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.say(&format!("!! {what} failed: {e:?}"));
                self.checks.push((format!("{what} succeeds"), false));
                None
            }
        }
    }

    fn send(&mut self, d: Dev, text: &str) {
        let view = self.names(&self.sim.members_at(d));
        self.say(&format!("{} sends {text:?} to its view {view}", self.name(d)));
        let r = self.sim.send(d, text.as_bytes());
        if let Some(ids) = self.expect_ok(&format!("{} sends", self.name(d)), r)
            && ids.len() > 1
        {
            self.say(&format!("   ({} first performed an automatic heal update, spec §5.8)", self.name(d)));
        }
        self.narrate();
    }

    /// Delivers everything that can cross the network now, then narrates what happened.
    fn deliver(&mut self) {
        self.sim.deliver_all();
        self.narrate();
    }

    /// Prints the events every device produced since the last call.
    fn narrate(&mut self) {
        for d in 0..self.sim.devices.len() {
            let events: Vec<Event> = self.sim.devices[d].events[self.cursor[d]..].to_vec();
            self.cursor[d] = self.sim.devices[d].events.len();
            let me = self.name(d).to_string();
            let mine = self.sim.devices[d].group().map(|g| g.me());
            for e in events {
                let line = match e {
                    Event::Joined { by, .. } if Some(by) == mine => format!("{me} created the group"),
                    Event::MemberAdded { by, id, .. } if Some(by) == mine => format!("{me} added {}", self.who(&id)),
                    Event::MembersRemoved { by, ids } if Some(by) == mine => {
                        format!("{me} removed {}", self.names(&ids))
                    }
                    Event::Joined { by, .. } => format!("{me} joined the group (invited by {})", self.who(&by)),
                    Event::MemberAdded { by, id, .. } => {
                        format!("{me} sees: {} added {}", self.who(&by), self.who(&id))
                    }
                    Event::AddCancelled { by, id } => {
                        format!("{me} sees: {}'s add of {} is cancelled", self.who(&by), self.who(&id))
                    }
                    Event::MembersRemoved { by, ids } => {
                        format!("{me} sees: {} removed {}", self.who(&by), self.names(&ids))
                    }
                    Event::Updated { by } if Some(by) == mine => {
                        format!("{me} updated its keys (post-compromise security)")
                    }
                    Event::Updated { by } => format!("{me} sees: {} updated its keys", self.who(&by)),
                    Event::Message { sender, plaintext, sender_removed, .. } => format!(
                        "{me} decrypted {:?} from {}{}",
                        String::from_utf8_lossy(&plaintext),
                        self.who(&sender),
                        if sender_removed { " (sender already removed here)" } else { "" }
                    ),
                    Event::Undecryptable { sender, .. } => {
                        format!("{me} cannot decrypt a message from {} (not in the sender's view)", self.who(&sender))
                    }
                    Event::RemovedFromGroup { by } => {
                        format!("{me} was removed by {}; it erases its group secrets", self.who(&by))
                    }
                    Event::HealPending => format!("{me}: heal pending (its next send starts with an update)"),
                    Event::DuplicateInstance { id } => format!("{me}: removing its duplicate instance {id}"),
                    other => format!("{me}: {other:?}"),
                };
                self.say(&format!("   {line}"));
            }
        }
    }

    fn membership(&self, title: &str) {
        self.say(&format!("membership per device ({title}):"));
        for d in 0..self.sim.devices.len() {
            let dev = &self.sim.devices[d];
            let what = match dev.group() {
                Some(g) if *g.status() == Status::Active => self.names(&g.members()),
                Some(g) => format!("not active ({:?})", g.status()),
                None if !dev.retired.is_empty() => "removed: its instance is terminated".to_string(),
                None => "not in the group".to_string(),
            };
            self.say(&format!("   {}: {what}", dev.name));
        }
    }

    fn check(&mut self, what: &str, holds: bool) {
        self.say(&format!("[{}] {what}", if holds { "ok" } else { "FAILED" }));
        self.checks.push((what.to_string(), holds));
    }
}

/// Runs the demo; returns whether every check holds.
pub(crate) fn run(args: &DemoArgs) -> bool {
    let temp = match &args.data_dir {
        Some(_) => None,
        None => match tempfile::tempdir() {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("dcgka demo: cannot make a temporary directory: {e}");
                return false;
            }
        },
    };
    let dir = match (&args.data_dir, &temp) {
        (Some(d), _) => d.clone(),
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => return false,
    };
    let found = (0..DEVICES).filter(|d| device_path(&dir, &name_of(*d)).exists()).count();
    if found == DEVICES {
        return resume(&dir);
    }
    if found > 0 {
        eprintln!("dcgka demo: {} holds {found} of the {DEVICES} device files; use an empty directory", dir.display());
        return false;
    }
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("dcgka demo: {}: {e}", dir.display());
        return false;
    }
    let key = match demo_key(&dir) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("dcgka demo: {e}");
            return false;
        }
    };
    let mut sim = Sim::new(DEVICES, args.seed);
    sim.shadows = true;
    let stored = sim.use_stores(|d| {
        let store = Store::create(device_path(&dir, &name_of(d)), &key)?;
        Ok(Box::new(DiskStore(store)) as Box<dyn PersistentStore>)
    });
    if let Err(e) = stored {
        eprintln!("dcgka demo: cannot create the stores in {}: {e:?}", dir.display());
        return false;
    }
    let ok = story(sim);
    let where_ = args.data_dir.as_ref().map(|d| d.display().to_string());
    ok & stores_after(&dir, &key, where_.as_deref())
}

/// The story of the first run, on fresh stores.
fn story(sim: Sim) -> bool {
    let mut demo = Demo { sim, cursor: vec![0; DEVICES], checks: Vec::new() };
    let dm = &mut demo;
    println!("dcgka demo: decentralized continuous group key agreement (Weidner et al., CCS 2021)");
    println!("Seven devices A..G share a simulated network; A, B, C and D start a group.");

    dm.phase("1. A creates the group");
    let r = dm.sim.create(A, &[B, C, D]);
    dm.expect_ok("create", r);
    dm.narrate();
    dm.deliver();
    dm.send(A, "hello, everyone");
    dm.deliver();
    dm.membership("after the create");

    dm.phase("2. The network splits: {A, B, E, G} | {C, D, F}");
    dm.sim.split(vec![0, 0, 1, 1, 0, 1, 0]);
    dm.say("Packets now cross only within a side; the rest waits for the heal.");

    dm.phase("3. Side 1 {A, B, E, G}: adds, an update, a removal, chat");
    dm.say("A adds E and G");
    let r = dm.sim.add(A, E);
    dm.expect_ok("A adds E", r);
    let r = dm.sim.add(A, G);
    dm.expect_ok("A adds G", r);
    dm.narrate();
    dm.deliver();
    dm.say("B updates its keys");
    let r = dm.sim.update(B);
    dm.expect_ok("B updates", r);
    dm.narrate();
    dm.deliver();
    dm.send(E, "hi, I am E");
    dm.deliver();
    dm.say("A changes its mind and removes G");
    if let Some(g) = dm.sim.mid(G) {
        let r = dm.sim.remove_member(A, g);
        dm.expect_ok("A removes G", r);
    }
    dm.narrate();
    dm.deliver();
    dm.send(A, "welcome E; G is out again");
    dm.deliver();

    dm.phase("4. Side 2 {C, D, F}: a removal, an add, an update, chat");
    dm.say("C removes D");
    let r = dm.sim.remove(C, D);
    dm.expect_ok("C removes D", r);
    dm.narrate();
    dm.deliver();
    dm.say("C adds F");
    let r = dm.sim.add(C, F);
    dm.expect_ok("C adds F", r);
    dm.narrate();
    dm.deliver();
    dm.say("F updates its keys");
    let r = dm.sim.update(F);
    dm.expect_ok("F updates", r);
    dm.narrate();
    dm.deliver();
    dm.send(F, "F here, hello C");
    dm.deliver();
    dm.send(C, "D is gone and must not read this");
    dm.deliver();
    dm.membership("during the partition: the two sides disagree");

    dm.phase("5. The partition heals");
    dm.sim.heal();
    dm.say("Every held packet is now delivered (store-and-forward sync).");
    dm.deliver();
    dm.membership("after the heal");

    dm.phase("6. Everyone chats after the heal");
    for d in [A, B, C, E, F] {
        let text = format!("after the heal, from {}", dm.name(d));
        dm.send(d, &text);
        dm.deliver();
    }

    verify(dm)
}

/// The verification block.
fn verify(dm: &mut Demo) -> bool {
    dm.phase("Verification");
    dm.say("members per device:");
    let expected: BTreeSet<String> = ["A", "B", "C", "E", "F"].iter().map(|s| s.to_string()).collect();
    let mut agree = true;
    for d in 0..dm.sim.devices.len() {
        let dev = &dm.sim.devices[d];
        if dev.active() {
            let names = dm.sim.member_names(d);
            agree &= names == expected;
            dm.say(&format!("   {}: {}", dev.name, names.into_iter().collect::<Vec<_>>().join(" ")));
        } else {
            let why = dev.retired.last().map_or("never joined".to_string(), |g| match g.status() {
                Status::Removed { by } => format!("removed (by {})", dm.who(by)),
                s => format!("{s:?}"),
            });
            dm.say(&format!("   {}: {why}", dev.name));
        }
    }
    dm.check("every active device has the members {A, B, C, E, F}", agree);
    let global = oracle::global_oracles(&dm.sim);
    for v in &global {
        dm.say(&format!("   {v}"));
    }
    dm.check("global oracles (same members, ratchets and histories everywhere)", global.is_empty());

    dm.say("messages decrypted by each intended recipient (in the sender's view when sent):");
    let final_members = oracle::active(&dm.sim).first().map(|(_, g)| g.members()).unwrap_or_default();
    for m in &dm.sim.messages {
        let mut cells = Vec::new();
        for id in m.view.iter().filter(|id| **id != m.sender) {
            let Some(d) = dm.sim.device_of(id) else { continue };
            let ok = dm.sim.decrypted(d, m.packet);
            let note = if final_members.contains(id) { "" } else { " (left later)" };
            cells.push(format!("{} {}{note}", dm.name(d), if ok { "yes" } else { "no" }));
        }
        cells.sort();
        dm.say(&format!(
            "   {:?} from {}: {}",
            String::from_utf8_lossy(&m.plaintext),
            dm.name(m.from),
            cells.join(", ")
        ));
    }
    let delivery = oracle::delivery_violations(&dm.sim);
    for v in &delivery {
        dm.say(&format!("   {v}"));
    }
    dm.check("every message reached every intended recipient that is still a member", delivery.is_empty());

    dm.say("what each removed device's state could read (kept past its removal, fed the whole transcript):");
    dm.sim.feed_transcript_to_shadows();
    let mut post_removal_reads = 0;
    for d in 0..dm.sim.devices.len() {
        let dev = &dm.sim.devices[d];
        if dev.active() {
            continue;
        }
        for sh in &dev.shadows {
            let me = sh.group.me();
            let read: Vec<(String, bool)> = sh
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::Message { sender, plaintext, .. } => {
                        let allowed = dm
                            .sim
                            .messages
                            .iter()
                            .any(|m| m.sender == *sender && m.plaintext == *plaintext && m.view.contains(&me));
                        Some((String::from_utf8_lossy(plaintext).into_owned(), allowed))
                    }
                    _ => None,
                })
                .collect();
            post_removal_reads += read.iter().filter(|(_, allowed)| !allowed).count();
            let list: Vec<String> =
                read.iter().map(|(t, allowed)| format!("{t:?}{}", if *allowed { "" } else { " <- LEAK" })).collect();
            dm.say(&format!(
                "   {} (instance {me}): {}",
                dev.name,
                if list.is_empty() { "nothing".to_string() } else { list.join(", ") }
            ));
        }
    }
    let conf = oracle::confidentiality_violations(&dm.sim);
    for v in &conf {
        dm.say(&format!("   {v}"));
    }
    dm.check(
        "removed devices could decrypt nothing sent after their removal",
        conf.is_empty() && post_removal_reads == 0,
    );
    let errors = dm.sim.errors();
    for (dev, es) in &errors {
        dm.say(&format!("   library errors at {dev}: {es:?}"));
    }
    dm.check("no library errors", errors.is_empty());

    let failed = dm.checks.iter().filter(|(_, ok)| !ok).count();
    println!();
    if failed == 0 {
        println!("RESULT: all {} checks passed", dm.checks.len());
    } else {
        println!("RESULT: {failed} of {} checks FAILED", dm.checks.len());
    }
    failed == 0
}

/// After a run: every device's file opens again on its own (the simulation is over and has
/// closed them); the application consumes each device's inbox of events (it printed them
/// above). Returns whether every store opened.
fn stores_after(dir: &Path, key: &StorageKey, shown_dir: Option<&str>) -> bool {
    println!();
    println!("== The stores ==");
    match shown_dir {
        Some(d) => println!(
            "  Each device keeps its state in its own SQLite file in {d} (key in {}):",
            key_path(Path::new(d)).display()
        ),
        None => println!("  Each device kept its state in its own SQLite file in a temporary directory:"),
    }
    let mut ok = true;
    for d in 0..DEVICES {
        let name = name_of(d);
        let path = device_path(dir, &name);
        match Store::open(&path, key).and_then(|s| {
            let events = s.inbox()?;
            s.mark_consumed(&events.iter().map(|e| e.id).collect::<Vec<_>>())?;
            Ok((s.database_bytes()?, events.len()))
        }) {
            Ok((bytes, events)) => {
                println!(
                    "   {name}.sqlite: {} bytes; the application consumed its {events} inbox events",
                    thousands(bytes)
                );
            }
            Err(e) => {
                println!("   {name}.sqlite: cannot be opened: {e}");
                ok = false;
            }
        }
    }
    match shown_dir {
        Some(d) => println!("  Run `dcgka demo --data-dir {d}` again: the devices resume from their files."),
        None => println!("  (deleted now; with --data-dir DIR they stay, and a second run resumes them)"),
    }
    ok
}

/// A later run on the same directory: the devices are read back from their files, and
/// every device still in the group writes to the others.
fn resume(dir: &Path) -> bool {
    println!("dcgka demo: resuming the {DEVICES} devices from their SQLite files in {}", dir.display());
    let key = match demo_key(dir) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("dcgka demo: {e}");
            return false;
        }
    };
    println!();
    println!("== 1. Every device opens its store ==");
    let mut devices = Vec::new();
    for d in 0..DEVICES {
        let name = name_of(d);
        let path = device_path(dir, &name);
        let opened = Store::open(&path, &key).map_err(|e| e.to_string()).and_then(|s| {
            let waiting = s.inbox().map(|v| v.len()).map_err(|e| e.to_string())?;
            let boxed: Box<dyn PersistentStore> = Box::new(DiskStore(s));
            dcgka_sim::Device::open(GroupConfig::default(), SimStore::persistent(boxed))
                .map(|dev| (dev, waiting))
                .map_err(|e| e.to_string())
        });
        match opened {
            Ok((dev, waiting)) => {
                let what = match dev.groups().next() {
                    Some((_, g)) if *g.status() == Status::Active => {
                        format!("a member of a group of {}", g.members().len())
                    }
                    _ => "in no group".to_string(),
                };
                println!(
                    "  {name}: opened {name}.sqlite: {what}; {waiting} events waiting; {} items to send",
                    dev.outbox().len()
                );
                devices.push((name, dev));
            }
            Err(e) => {
                println!("  {name}: cannot open {}: {e}", path.display());
                return false;
            }
        }
    }
    let mut sim = Sim::new(DEVICES, 0);
    sim.resume(devices);
    let mut demo = Demo { sim, cursor: vec![0; DEVICES], checks: Vec::new() };
    let dm = &mut demo;
    dm.check("every device opened from its file", true);
    dm.membership("as read back from disk");

    dm.phase("2. Every device still in the group writes");
    let actives: Vec<Dev> = (0..DEVICES).filter(|d| dm.sim.devices[*d].active()).collect();
    for d in &actives {
        let text = format!("hello again from {}, resumed from disk", dm.name(*d));
        dm.send(*d, &text);
        dm.deliver();
    }

    dm.phase("Verification");
    let members: BTreeSet<BTreeSet<String>> = actives.iter().map(|d| dm.sim.member_names(*d)).collect();
    dm.check("every active device sees the same members", members.len() == 1);
    let global = oracle::global_oracles(&dm.sim);
    for v in &global {
        dm.say(&format!("   {v}"));
    }
    dm.check("global oracles (same members, ratchets and histories everywhere)", global.is_empty());
    let mut all_read = !dm.sim.messages.is_empty();
    for m in &dm.sim.messages {
        let readers: Vec<String> = actives
            .iter()
            .filter(|d| **d != m.from)
            .map(|d| format!("{} {}", dm.name(*d), if dm.sim.decrypted(*d, m.packet) { "yes" } else { "no" }))
            .collect();
        all_read &= readers.iter().all(|r| r.ends_with("yes"));
        dm.say(&format!("   {:?}: {}", String::from_utf8_lossy(&m.plaintext), readers.join(", ")));
    }
    dm.check("every active device decrypted every other's message", all_read);
    let outsiders_read = (0..DEVICES)
        .filter(|d| !actives.contains(d))
        .any(|d| dm.sim.devices[d].events.iter().any(|e| matches!(e, Event::Message { .. })));
    dm.check("devices outside the group read nothing", !outsiders_read);
    let errors = dm.sim.errors();
    for (dev, es) in &errors {
        dm.say(&format!("   library errors at {dev}: {es:?}"));
    }
    dm.check("no library errors", errors.is_empty());
    let failed = dm.checks.iter().filter(|(_, ok)| !ok).count();
    println!();
    if failed == 0 {
        println!("RESULT: all {} checks passed", dm.checks.len());
    } else {
        println!("RESULT: {failed} of {} checks FAILED", dm.checks.len());
    }
    drop(demo);
    let shown = dir.display().to_string();
    (failed == 0) & stores_after(dir, &key, Some(&shown))
}
