//! `Debug` of every secret-holding type shows no key bytes.

use dcgka::crypto::{Secret32, SigningSecret, X25519Secret, extract};
use dcgka::ids::{Epoch, GroupId, MemberId};
use dcgka::prekeys::{Identity, OneTimePrekeyId, SignedPrekeyId};
use dcgka::ratchet::SenderRatchet;

use crate::{NOW, rng, two_devices};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Neither the hex nor the decimal rendering of `secret` appears in `debug`.
fn assert_redacted(debug: &str, secret: &[u8]) {
    assert!(!debug.contains(&hex(&secret[..8])), "hex key bytes in {debug}");
    let dec = format!("{:?}", &secret[..4]);
    assert!(!debug.contains(&dec[1..dec.len() - 1]), "decimal key bytes in {debug}");
}

#[test]
fn secrets_are_redacted() {
    let mut r = rng(11);
    let s = Secret32::random(&mut r);
    assert_redacted(&format!("{s:?}"), s.expose());
    let x = X25519Secret::generate(&mut r);
    assert_redacted(&format!("{x:?}"), &x.to_bytes()[..]);
    let k = SigningSecret::generate(&mut r);
    assert_redacted(&format!("{k:?}"), &k.to_bytes()[..]);
    let prk = extract(Some(&s), b"ikm");
    assert!(format!("{prk:?}").contains("redacted"));
    let ratchet = SenderRatchet::new(GroupId([1; 32]), MemberId([2; 32]), Epoch(1), s.clone()).unwrap();
    let d = format!("{ratchet:?}");
    assert!(d.contains("redacted"));
    assert_redacted(&d, s.expose());
}

#[test]
fn identities_sessions_and_key_stores_are_redacted() {
    let mut r = rng(12);
    let (mut a, mut b, mut dir) = two_devices(&mut r, 2);
    let c = a.session.send(&mut r, &mut dir, NOW, b"secret payload").unwrap();
    let staged = b.session.receive_staged(b.identity.key_store(), &c).unwrap();
    let d = format!("{staged:?}");
    assert!(!d.contains("secret payload") && !d.contains(&hex(b"secret payload")), "{d}");
    let _ = staged.commit(&mut b.session, b.identity.key_store_mut());
    for d in [
        format!("{:?}", a.identity),
        format!("{:?}", a.session),
        format!("{:?}", b.session),
        format!("{:?}", b.identity.key_store()),
    ] {
        assert!(d.contains("redacted"), "{d}");
        assert_redacted(&d, &a.identity.signing_key().to_bytes()[..]);
        assert_redacted(&d, &b.identity.signing_key().to_bytes()[..]);
    }
}

#[test]
fn a_restored_identity_and_its_prekey_secrets_are_redacted() {
    let mut r = rng(13);
    let (a, _, _) = two_devices(&mut r, 2);
    let restored = Identity::restore(&a.identity.snapshot()).unwrap();
    let store = restored.key_store();
    let mut secrets = vec![restored.signing_key().to_bytes(), store.spk(SignedPrekeyId(1)).unwrap().to_bytes()];
    secrets.extend((1..=2).map(|i| store.opk(OneTimePrekeyId(i)).unwrap().to_bytes()));
    for d in [format!("{restored:?}"), format!("{store:?}"), format!("{:?}", a.identity)] {
        assert!(d.contains("redacted"), "{d}");
        for s in &secrets {
            assert_redacted(&d, &s[..]);
        }
    }
}
