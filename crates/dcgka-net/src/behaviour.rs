//! The libp2p side of a node: the swarm's behaviour (gossipsub for group envelopes, the
//! project's request-response protocol, identify, ping and a block list) and the topic of
//! each group.

use std::time::Duration;

use dcgka::ids::GroupId;
use libp2p::gossipsub::{
    self, AllowAllSubscriptionFilter, IdentTopic, MaxCountSubscriptionFilter, MessageAuthenticity, MessageId,
    ValidationMode,
};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Swarm, Transport, allow_block_list, identify, noise, ping, tcp, yamux};
use sha2::{Digest, Sha256};

use crate::NetError;
use crate::consts::{IDLE_CONNECTION_TIMEOUT, MAX_GOSSIP_BYTES, MAX_TOPICS, REQUEST_TIMEOUT};
use crate::invite::hex;
use crate::traffic::Counted;
use crate::wire::{FrameCodec, PROTOCOL};

/// Identify's protocol version of dcgka nodes.
pub const IDENTIFY_PROTOCOL: &str = "/dcgka/id/1";

/// Identify's agent prefix of a device; its group identity key follows in hex.
pub const AGENT_DEVICE: &str = "dcgka-device/1 ";

/// Identify's agent of a mailbox.
pub const AGENT_MAILBOX: &str = "dcgka-mailbox/1";

type Gossip =
    gossipsub::Behaviour<gossipsub::IdentityTransform, MaxCountSubscriptionFilter<AllowAllSubscriptionFilter>>;

/// What a node speaks.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(crate) gossipsub: Gossip,
    pub(crate) rr: request_response::Behaviour<FrameCodec>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
}

/// The gossip topic of a group: a hash of its ID, so that relays and mailboxes see no
/// group ID.
pub fn topic(gid: &GroupId) -> IdentTopic {
    let h = Sha256::new().chain_update(b"dcgka topic").chain_update(gid.as_bytes()).finalize();
    IdentTopic::new(format!("dcgka/{}", hex(&h[..16])))
}

/// A gossip message's ID: the hash of its content, so that one envelope published by
/// several peers (or again after a restart) is one message.
fn content_id(m: &gossipsub::Message) -> MessageId {
    MessageId::from(Sha256::digest(&m.data).to_vec())
}

/// Builds the swarm of a node with network key `key` and identify agent `agent`.
pub(crate) fn build_swarm(key: Keypair, agent: String, heartbeat: Duration) -> Result<Swarm<Behaviour>, NetError> {
    let gossip_config = gossipsub::ConfigBuilder::default()
        .max_transmit_size(MAX_GOSSIP_BYTES)
        .validation_mode(ValidationMode::Strict)
        .validate_messages()
        .message_id_fn(content_id)
        .heartbeat_interval(heartbeat)
        // Every heartbeat, announce the recent message IDs (IHAVE) to every subscribed peer
        // outside the mesh, not to a random quarter of them: a peer the mesh left out then
        // hears of each message for certain, not with a probability (a test with one hub
        // and fifteen leaves lost a message to one leaf in about one run in five with the
        // default). The cost is one small control frame per such peer per heartbeat.
        .gossip_factor(1.0)
        .build()
        .map_err(|e| NetError::Engine(e.to_string()))?;
    let filter = MaxCountSubscriptionFilter {
        filter: AllowAllSubscriptionFilter {},
        max_subscribed_topics: MAX_TOPICS,
        max_subscriptions_per_request: MAX_TOPICS,
    };
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        // TCP as `with_tcp` builds it, each connection counting its bytes (`traffic`).
        .with_other_transport(|key| {
            let noise = noise::Config::new(key).map_err(Box::<dyn std::error::Error + Send + Sync>::from)?;
            Ok(tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                .map(|stream, _| Counted(stream))
                .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                .authenticate(noise)
                .multiplex(yamux::Config::default()))
        })
        .map_err(|e| NetError::Engine(e.to_string()))?
        .with_behaviour(|key| {
            let mut gossipsub =
                Gossip::new_with_subscription_filter(MessageAuthenticity::Signed(key.clone()), gossip_config, filter)?;
            // Peer scoring, so that the application can score down peers that send garbage
            // (set_application_score); the rest of the parameters stay neutral. The IP
            // colocation penalty is off: past 10 peers on one address (one machine, a NAT,
            // the devices a mailbox serves) it would graylist them all, and a node would
            // then hear its group only through sync.
            let params = gossipsub::PeerScoreParams {
                app_specific_weight: 1.0,
                ip_colocation_factor_weight: 0.0,
                ..Default::default()
            };
            gossipsub.with_peer_score(params, gossipsub::PeerScoreThresholds::default())?;
            let rr = request_response::Behaviour::with_codec(
                FrameCodec,
                [(PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT),
            );
            let identify = identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.to_string(), key.public()).with_agent_version(agent),
            );
            Ok(Behaviour {
                blocked: allow_block_list::Behaviour::default(),
                gossipsub,
                rr,
                identify,
                ping: ping::Behaviour::default(),
            })
        })
        .map_err(|e| NetError::Engine(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}
