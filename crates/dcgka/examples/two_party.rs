//! Two devices set each other up from published prekey bundles and exchange 2SM
//! messages, printing what happens at each step.
//!
//! Run with `cargo run --release --example two_party`.

use std::error::Error;

use dcgka::codec::Encode;
use dcgka::ids::{GroupId, MemberId, Origin, SeqNo};
use dcgka::prekeys::{Identity, InMemoryPrekeyDirectory};
use dcgka::two_party::{KeyRef, TwoPartySession};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn describe(r: &KeyRef) -> String {
    match r {
        KeyRef::Prekey { spk_id, opk_id: Some(o) } => {
            format!("first contact: signed prekey {} + one-time prekey {}", spk_id.0, o.0)
        }
        KeyRef::Prekey { spk_id, opk_id: None } => format!("first contact: signed prekey {} only", spk_id.0),
        KeyRef::YourKey(i) => format!("to the receiver's own key #{i}"),
        KeyRef::KeyIGaveYou => "to the key the sender gave the receiver".to_string(),
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    // Sans-IO: randomness and time come from the caller. A fixed seed makes the run repeatable.
    let mut rng = ChaCha20Rng::seed_from_u64(2021);
    let now = 1_800_000_000;

    let mut alice = Identity::generate(&mut rng);
    let mut bob = Identity::generate(&mut rng);
    let mut directory = InMemoryPrekeyDirectory::new();
    directory.publish_identity(&mut rng, &mut alice, now, 5)?;
    directory.publish_identity(&mut rng, &mut bob, now, 5)?;
    println!("published prekey bundles: alice {:?}, bob {:?}", alice.public_key(), bob.public_key());
    println!("  bob's one-time prekeys available: {}", directory.remaining_one_time_prekeys(&bob.public_key()));

    let gid = GroupId([0x5a; 32]);
    let a = MemberId::derive(&gid, &alice.public_key(), Origin::Creator);
    let b = MemberId::derive(&gid, &bob.public_key(), Origin::Operation(a, SeqNo(1)));
    let mut at_alice = TwoPartySession::new(gid, a, b, bob.public_key());
    let mut at_bob = TwoPartySession::new(gid, b, a, alice.public_key());

    // Both send first, concurrently, while the other is offline.
    let c1 = at_alice.send(&mut rng, &mut directory, now, b"hi bob, this is alice")?;
    let c2 = at_bob.send(&mut rng, &mut directory, now, b"hi alice, bob here")?;
    println!("alice -> bob: {} bytes, {}", c1.to_bytes().len(), describe(&c1.key_ref));
    println!("bob -> alice: {} bytes, {}", c2.to_bytes().len(), describe(&c2.key_ref));

    let opk = match c1.key_ref {
        KeyRef::Prekey { opk_id, .. } => opk_id,
        _ => None,
    };
    let got = at_bob.receive(bob.key_store_mut(), &c1)?;
    println!("bob decrypts: {:?}", String::from_utf8_lossy(&got));
    if let Some(o) = opk {
        println!("  bob's one-time prekey {} deleted after use: {}", o.0, !bob.key_store().has_opk(o));
    }
    let got = at_alice.receive(alice.key_store_mut(), &c2)?;
    println!("alice decrypts: {:?}", String::from_utf8_lossy(&got));

    // Replaying a delivered message fails: its key is gone.
    match at_bob.receive(bob.key_store_mut(), &c1) {
        Err(e) => println!("replay of alice's first message refused: {e}"),
        Ok(_) => return Err("replay was accepted".into()),
    }

    // A few rounds of conversation; every message uses fresh keys.
    for round in 1..=3 {
        let text = format!("alice, round {round}");
        let c = at_alice.send(&mut rng, &mut directory, now, text.as_bytes())?;
        let got = at_bob.receive(bob.key_store_mut(), &c)?;
        println!("alice -> bob ({}): {:?}", describe(&c.key_ref), String::from_utf8_lossy(&got));
        let text = format!("bob, round {round}");
        let c = at_bob.send(&mut rng, &mut directory, now, text.as_bytes())?;
        let got = at_alice.receive(alice.key_store_mut(), &c)?;
        println!("bob -> alice ({}): {:?}", describe(&c.key_ref), String::from_utf8_lossy(&got));
    }
    println!(
        "secret keys still held: alice {}, bob {} (older ones were erased as soon as they could no longer be used)",
        at_alice.held_secret_keys(),
        at_bob.held_secret_keys()
    );
    Ok(())
}
