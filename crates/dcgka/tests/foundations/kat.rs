//! Frozen known-answer vectors: an accidental change to the key schedule or the wire format
//! fails here. Regenerate only for a deliberate, versioned change (the failure message
//! prints the new table).

use dcgka::codec::Encode;
use dcgka::crypto::{
    self, IdentityKey, Secret32, Signature, SigningSecret, VerifyingKey, X25519Public, X25519Secret, labels,
};
use dcgka::ids::{Epoch, GroupId, MemberId, MemberTag, Origin, SeqNo};
use dcgka::prekeys::{CarriedPrekey, OneTimePrekeyId, SignedPrekeyId};
use dcgka::ratchet::SenderRatchet;
use dcgka::two_party::{KeyRef, TwoSmCiphertext};
use dcgka::wire::{
    AckRef, ApplicationBody, ControlBody, Envelope, EnvelopeKind, Forward, SeedBlock, recipients_digest,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn check(actual: &[(&str, String)], expected: &[(&str, &str)]) {
    let table: String = actual.iter().map(|(n, h)| format!("    (\"{n}\", \"{h}\"),\n")).collect();
    assert_eq!(actual.len(), expected.len(), "vector count changed; new table:\n{table}");
    for ((n, h), (en, eh)) in actual.iter().zip(expected) {
        assert_eq!((*n, h.as_str()), (*en, *eh), "vector {n} changed; new table:\n{table}");
    }
}

#[test]
fn kdf_labels() {
    let gid = GroupId([1; 32]);
    let ik: IdentityKey = VerifyingKey([2; 32]);
    let creator = MemberId::derive(&gid, &ik, Origin::Creator);
    let added = MemberId::derive(&gid, &ik, Origin::Operation(creator, SeqNo(7)));
    let key = Secret32::from_bytes([0x42; 32]);
    let ctx: &[&[u8]] = &[&gid.0, &creator.0, &7u64.to_be_bytes()];
    let mut actual = vec![("member-id/creator", hex(&creator.0)), ("member-id/added", hex(&added.0))];
    for label in [
        labels::MEMBER_SECRET,
        labels::RATCHET_UPDATE,
        labels::RATCHET_NEXT,
        labels::APP_CHAIN_INIT,
        labels::APP_MESSAGE_KEY,
        labels::APP_CHAIN_NEXT,
    ] {
        actual.push((label, hex(crypto::expand(&key, label, ctx).unwrap().expose())));
    }
    // The outer ratchet's Extract of a tagged input, keyed by the previous state.
    for label in [labels::INPUT_MEMBER, labels::INPUT_WELCOME, labels::INPUT_ADD] {
        let input = crypto::info(label, &[key.expose()]);
        let prk = crypto::extract(Some(&key), &input);
        actual.push((label, hex(prk.expand(labels::RATCHET_UPDATE, &[&gid.0]).unwrap().expose())));
    }
    for label in [
        labels::APP_AAD,
        labels::TWO_SM,
        labels::TWO_SM_PREKEY,
        labels::TWO_SM_AAD,
        labels::SIG_ENVELOPE,
        labels::SIG_WELCOME,
        labels::SIG_SIGNED_PREKEY,
        labels::SIG_ONE_TIME_PREKEY,
        labels::ENVELOPE_HASH,
        labels::RECIPIENTS_DIGEST,
    ] {
        actual.push((label, hex(&crypto::hash(label, &[b"kat"]).0)));
    }
    actual.push(("recipients-digest/2", hex(&recipients_digest(&[creator, added]).0)));
    // The inner ratchet end to end: chain init, message key, chain step and associated data.
    let mut r = SenderRatchet::new(gid, creator, Epoch(3), key.clone()).unwrap();
    let (_, c0) = r.encrypt(SeqNo(4), b"kat message 0").unwrap();
    let (_, c1) = r.encrypt(SeqNo(5), b"kat message 1").unwrap();
    actual.push(("app-ciphertext/0", hex(&c0)));
    actual.push(("app-ciphertext/1", hex(&c1)));
    check(&actual, EXPECTED_KDF);
}

/// The prekey KEM of a first 2SM message (§4.3, one X3DH-style layer) with fixed prekeys
/// and a fixed-seed ephemeral key, with and without a one-time prekey; then a whole first
/// contact between two seeded devices, which also freezes the KEM's context as 2SM builds it.
#[test]
fn prekey_kem() {
    let mut rng = ChaCha20Rng::seed_from_u64(0x5eed);
    let spk = X25519Secret::from_bytes([0x51; 32]);
    let opk = X25519Secret::from_bytes([0x0e; 32]);
    let (spk_pub, opk_pub) = (spk.public_key(), opk.public_key());
    let binding: &[&[u8]] = &[&[0x0a; 32], &[0x0b; 32], &[0x0c; 32]];
    let key_ref = KeyRef::Prekey { spk_id: SignedPrekeyId(3), opk_id: Some(OneTimePrekeyId(9)) };
    let aad = crypto::info(labels::TWO_SM_AAD, &[&key_ref.to_bytes()]);
    let pt = b"kat prekey kem plaintext";
    let mut actual = Vec::new();
    for (name, with_opk) in [("opk", true), ("spk-only", false)] {
        let seal_opk = with_opk.then_some((9, &opk_pub));
        let (enc, ct) = crypto::prekey_seal(&mut rng, (3, &spk_pub), seal_opk, binding, &aad, pt).unwrap();
        let open_opk = with_opk.then_some((9, &opk));
        assert_eq!(&crypto::prekey_open((3, &spk), open_opk, binding, &enc, &aad, &ct).unwrap()[..], pt);
        actual.push((name, format!("{}:{}", hex(&enc), hex(&ct))));
    }
    for (name, opks) in [("2sm-first-contact/opk", 1), ("2sm-first-contact/spk-only", 0)] {
        let mut r = crate::rng(2021);
        let (mut a, mut b, mut dir) = crate::two_devices(&mut r, opks);
        let c = a.session.send(&mut r, &mut dir, crate::NOW, &[0x5e; 32]).unwrap();
        assert_eq!(&b.session.receive(b.identity.key_store_mut(), &c).unwrap()[..], &[0x5e; 32]);
        actual.push((name, hex(&c.to_bytes())));
    }
    check(&actual, EXPECTED_PREKEY_KEM);
}

fn ct(key_ref: KeyRef, fill: u8, len: usize) -> TwoSmCiphertext {
    TwoSmCiphertext { key_ref, enc: [fill; 32], ct: vec![fill ^ 0xff; len] }
}

#[test]
fn encoded_messages() {
    let gid = GroupId([0x0a; 32]);
    let sender = MemberId([0x0b; 32]);
    let key = SigningSecret::from_bytes(&[0x0c; 32]);
    let new_key = SigningSecret::from_bytes(&[0x0d; 32]).verifying_key();
    let ik = key.verifying_key();
    let seeds = SeedBlock {
        recipients_digest: recipients_digest(&[MemberId([0x21; 32]), MemberId([0x22; 32])]),
        cts: vec![
            ct(KeyRef::Prekey { spk_id: SignedPrekeyId(1), opk_id: Some(OneTimePrekeyId(9)) }, 1, 20),
            ct(KeyRef::YourKey(3), 2, 20),
        ],
    };
    let of = AckRef { of_sender: MemberTag([0x31; 16]), of_seq: SeqNo(200), of_hash: [0x32; 16] };
    let bodies: Vec<(&str, EnvelopeKind, SeqNo, Vec<u8>)> = vec![
        (
            "create",
            EnvelopeKind::Create,
            SeqNo(1),
            ControlBody::Create { members: vec![VerifyingKey([0x21; 32])], seeds: seeds.clone() }.to_bytes(),
        ),
        (
            "ack",
            EnvelopeKind::Ack,
            SeqNo(2),
            ControlBody::Ack {
                of,
                forwards: vec![Forward { recipient: MemberTag([0x41; 16]), ct: ct(KeyRef::KeyIGaveYou, 3, 8) }],
            }
            .to_bytes(),
        ),
        ("update", EnvelopeKind::Update, SeqNo(3), ControlBody::Update { seeds: seeds.clone() }.to_bytes()),
        (
            "remove",
            EnvelopeKind::Remove,
            SeqNo(4),
            ControlBody::Remove { target: MemberTag([0x51; 16]), seeds }.to_bytes(),
        ),
        (
            "add",
            EnvelopeKind::Add,
            SeqNo(5),
            ControlBody::Add {
                target: VerifyingKey([0x61; 32]),
                prekey: CarriedPrekey {
                    spk_id: SignedPrekeyId(2),
                    spk_pub: X25519Public([0x62; 32]),
                    not_before: 1_700_000_000,
                    not_after: 1_707_776_000,
                    signature: Signature([0x63; 64]),
                },
            }
            .to_bytes(),
        ),
        (
            "add-ack",
            EnvelopeKind::AddAck,
            SeqNo(1),
            ControlBody::AddAck { of, ratchet_ct: Some(ct(KeyRef::YourKey(1), 4, 8)) }.to_bytes(),
        ),
        (
            "application",
            EnvelopeKind::Application,
            SeqNo(300),
            ApplicationBody { epoch_delta: 2, ct: vec![0x71; 48] }.to_bytes(),
        ),
    ];
    let mut actual = Vec::new();
    for (name, kind, seq, body) in bodies {
        let rotate = dcgka::wire::requires_rotation(kind, seq).then_some(new_key);
        let first = (seq.0 == 1).then_some(ik);
        let cert = rotate.map(|k| dcgka::wire::CertifiedKey::issue(&key, &gid, &sender, seq, k).cert);
        let env = Envelope::seal(kind, &gid, seq, &sender, first, rotate, cert, body, &key);
        env.verify(&gid, &sender, &ik).unwrap();
        actual.push((name, hex(&env.to_bytes())));
    }
    check(&actual, EXPECTED_WIRE);
}

const EXPECTED_KDF: &[(&str, &str)] = &[
    ("member-id/creator", "ecd8a8239d4d5094473049b74929fe7d1c4d40bb1ceba7730781a7c0c1513e9e"),
    ("member-id/added", "3297ea739db05bdeccdc3fdfb590c98bc5b0911beaeeefbac8ad44af85a6786d"),
    ("member-secret", "13402a26b1aa3e582461ae24a4ebecce878a91618d219a2023d425b12140fcea"),
    ("ratchet-update", "aff2e6f6eddb9ea3ae8520a3020532844d3eb2e0373305395f33c655ddd3da9e"),
    ("ratchet-next", "547be7eaba6b8786b31d489724bfef044516c1a79f6367befc42360b81b531e7"),
    ("app-chain-init", "a6fb137fc60bc5ad779e2099db09f70b5481e16c5f410823bb88f566e70ddf8e"),
    ("app-message-key", "b0b89aaf89f93440407cd38b9500fe33f8d1b7485ddafdefe56f6ce53056ebea"),
    ("app-chain-next", "ae567039b91eb733fc1beccca48728686eaebb2a1bbbe15d7f04fb2348d3900b"),
    ("input-member", "0f482575cd724c2616575309a1f120c9f687e14f451d1b896784246c804ad26a"),
    ("input-welcome", "391d94da59abb07eac5431e90ce52ef970f63259a60471344831df08ff1d48c9"),
    ("input-add", "d246e8843a4c556cf6f62457a01b58179a7535ab9a73fe738fc289cfc0363d98"),
    ("app-aad", "7f4cdf119216604649944704d931fa0a72d0f8570a3da799f21c0288f9ff9cf7"),
    ("2sm", "b27f7ab38aa5d4ab36cad1d691bc51bc9ef10e20a72ecba320531139c00b4506"),
    ("2sm-prekey", "1779e3d1b3a7645e0f2a81d0c0477d5d6b9eaa7a9b5d7269c7e83255586b1f8d"),
    ("2sm-aad", "c95575f7402163c8ce0b480c82a7b029381860e2e61df14184a4f8bd2fc2d13c"),
    ("sig-envelope", "f49c2fa6a57da97b3dc8f84e4ba6f8a7e89579055bf290bed7943244b6441989"),
    ("sig-welcome", "e329a2adc5581797076a59a2008a3fb9b13968ec6b696e59d6d1aa208e5f0acd"),
    ("sig-signed-prekey", "126a2ed4b7bdf92730199c0abc40f81dbb7d866ba7838694048d149b2d55b104"),
    ("sig-one-time-prekey", "a5e1480e0d60bd96ca18d4b4c2151dcfb16bc8312d996a12b92249122088d5de"),
    ("envelope-hash", "3bbd6e49c365accde31305970e556162836be0653a751b37ae39fe6aaaec253b"),
    ("recipients-digest", "be15d8666d016c5f0198a45a098fd5361c1f81a6251fcdc0b71f4740ec678fa7"),
    ("recipients-digest/2", "f00a7b582438bbb5c3cc22a821cd0e8792fea8bac05852987a9821ec3a2fbb33"),
    ("app-ciphertext/0", "4bb2cdb248ea159732ef2725bb4282e58d422aa18073ed0a97b0b344be"),
    ("app-ciphertext/1", "d0756ee22bd7ebd4e0e5a14f6a83faeca667d3e283543d1177f2901cc8"),
];
const EXPECTED_PREKEY_KEM: &[(&str, &str)] = &[
    (
        "opk",
        "af2767ab456c8f6413d393a95b968e981eadc8522533148885ad54eb195d0161:0b7b884b4656e4d5f6942e538f30e84d555eab7cc811bc5e9776a75cd2d3275b2d01dbec0b484cc6",
    ),
    (
        "spk-only",
        "454aa57773ddc0446755942f81d7d1c4c2e40649567d5f2b1c9d7dce361ecf74:ac1365a220262b1f85d1288ca9064d533989bbdcdac72855bbe778fecffe31b03f971946bdaa5fb5",
    ),
    (
        "2sm-first-contact/opk",
        "000101012dfc815c6166673fe82d18fe8a4227557f8c8818f8533282af00f5444296967371632979b39587370523738b8df339d1e47a84f4d53119a8e272f50da143a6dd44a2859fd1058c573d220c2de04bab4fa541c5a0c081eccbae9678435e755b1c0b8ae07c920500068438fb0422ae45e484b73dd508f6ac99d83815adddde862da7bfec803f31928cec4bd03dd6bf14fcc9e2",
    ),
    (
        "2sm-first-contact/spk-only",
        "0001004ef9d73b6cef432cbb5b09b41537095191254982f5d88a9cb18a15e7fcc1b56471be7a2d69628233c98e72fb1ae6e505c1e99df791e5b126bc3eb4c3d2776fc0348e535497c9889e6b379de7dbb5d309ac3d808507116c26a626ace0ed5ae3a89fbafde4af3cdbcb65d00a4e835b947c11f293128188fb86ddf1e2bd730e795163bd0771c150e460790d055ec56310a5d0b7",
    ),
];
const EXPECTED_WIRE: &[(&str, &str)] = &[
    (
        "create",
        "11010a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a010b513ad9b4924015ca0902ed079044d3ac5dbec2306f06948c10da8eb6e39f2d0191a28a0b74381593a4d9469579208926afc8ad82c8839b7644359b9eba9a4b3a8df97c5393d6f278e8df6c476e3155a895b877143d17381f2253c4336a2f7e2bff66efdeccc93681197616354937048cc62bf78dfc24f6e291a3b9bd8689910e012121212121212121212121212121212121212121212121212121212121212121eee96f93e7ee07b1be66bd83b55fe3502f8afdfe5ce8a9a6fde942a353daec150200010109010101010101010101010101010101010101010101010101010101010101010114fefefefefefefefefefefefefefefefefefefefe0103020202020202020202020202020202020202020202020202020202020202020214fdfdfdfdfdfdfdfdfdfdfdfdfdfdfdfdfdfdfdfd0e889b4e9a1405b9473641aa1e19b6847644260499a0e6afbbef96245f1c685ce8602f7697a06354e99fccc7d086fa3602a3d7d5b067bab8961d9b2533eed600",
    ),
    (
        "ack",
        "1102020b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0031313131313131313131313131313131c80132323232323232323232323232323232014141414141414141414141414141414102030303030303030303030303030303030303030303030303030303030303030308fcfcfcfcfcfcfcfc79dd04a26229e9b006ade2862e7ba23bee3edba59d29c3e9c1a4f3d5f1461191eaa12832eec452a4c7bc5958fcadacbdb95b3afd30572b94efae20fb84fe860b",
    ),
    (
        "update",
        "1103030b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0191a28a0b74381593a4d9469579208926afc8ad82c8839b7644359b9eba9a4b3a614b4d904d492ba736a953f67dc26237b109c9ecb8eae965b3b161f9526450fbd8bbb6c792685ff46ab34bf549f7df04e59a1f38dded49ec66bba33574044605eee96f93e7ee07b1be66bd83b55fe3502f8afdfe5ce8a9a6fde942a353daec150200010109010101010101010101010101010101010101010101010101010101010101010114fefefefefefefefefefefefefefefefefefefefe0103020202020202020202020202020202020202020202020202020202020202020214fdfdfdfdfdfdfdfdfdfdfdfdfdfdfdfdfdfdfdfd072173dc5cd051c3b06454620c146050401d4636c307b56992c68dbe19b8f7712e6f3b0938269e1106eafbd76202471e77b70ce43b372867cd4fc40b72cb1609",
    ),
    (
        "remove",
        "1104040b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0191a28a0b74381593a4d9469579208926afc8ad82c8839b7644359b9eba9a4b3a8b7971d47ea9b17093b58bc57503aca7080c5ab13d3f2cea155191c46819ae0f7831016b83014040bf997b1edf038db250d50f3a38b56c1edbdb34d9a497450451515151515151515151515151515151eee96f93e7ee07b1be66bd83b55fe3502f8afdfe5ce8a9a6fde942a353daec150200010109010101010101010101010101010101010101010101010101010101010101010114fefefefefefefefefefefefefefefefefefefefe0103020202020202020202020202020202020202020202020202020202020202020214fdfdfdfdfdfdfdfdfdfdfdfdfdfdfdfdfdfdfdfd48f15f80f1b0ce89885db339dd88b8666b9cb16cf862242a575f4884ed3374bf66911a36c27c38e00f8485ff2e33a6c56c4147d7365f715c85849a04a5ad850e",
    ),
    (
        "add",
        "1105050b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0191a28a0b74381593a4d9469579208926afc8ad82c8839b7644359b9eba9a4b3a811f8a0f6ff8f9cd82050f8324962eb777462dd9c7c48c8e84bc2e9ee7dcf0d3299731b3396128b716ce2d0e44f1eac7f38861b2738faf792f5bb27ef4c97601616161616161616161616161616161616161616161616161616161616161616162626262626262626262626262626262626262626262626262626262626262620280e2cfaa0680b0aaae06636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363636363633698069487854e34bb8ade8862a2b807024439788b530b22bee0097ca178ee0b819c4906c14d314107b38fee3c81aef38fdcfdbb88ea58e4f21e747149bd1f03",
    ),
    (
        "add-ack",
        "1106010b513ad9b4924015ca0902ed079044d3ac5dbec2306f06948c10da8eb6e39f2d0191a28a0b74381593a4d9469579208926afc8ad82c8839b7644359b9eba9a4b3a8df97c5393d6f278e8df6c476e3155a895b877143d17381f2253c4336a2f7e2bff66efdeccc93681197616354937048cc62bf78dfc24f6e291a3b9bd8689910e31313131313131313131313131313131c80132323232323232323232323232323232010101040404040404040404040404040404040404040404040404040404040404040408fbfbfbfbfbfbfbfb18b9a0a0a58749d4f86237224ab94902b5cf5937ddf3c50e6dc464508637af99fd8e612adb33856b7b9d53154e136b38d15212e6719efd73731de8c6136c810c",
    ),
    (
        "application",
        "1110ac020b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0002717171717171717171717171717171717171717171717171717171717171717171717171717171717171717171717171e4ae28453d3eca0d8b42d2a1265fe0982fde3fbb273857a5c0089856485dc18a95b05f7ca07d9a69a17188e4f12c1fe25503a0a4450f4dd464a0ece3ffe25e04",
    ),
];
