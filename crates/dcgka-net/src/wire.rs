//! The project's request-response protocol (`/dcgka/req/1`): sync (§7.7), direct messages
//! (Welcomes), prekey bundles and the mailbox requests, in the library's canonical
//! encoding, one length-prefixed frame each way. Decoding is total and bounded: a frame is
//! refused by its length before it is read.

use dcgka::IdentityKey;
use dcgka::codec::{Decode, DecodeError, Encode, Reader, Writer};
use dcgka::ids::GroupId;
use dcgka::prekeys::{NetworkAttestation, OneTimePrekey, PrekeyBundle, Signed, SignedPrekey};
use dcgka_device::{SyncRequest, SyncResponse};
use libp2p::StreamProtocol;
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::consts::MAX_FRAME_BYTES;

/// The request-response protocol's name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/dcgka/req/1");

/// Items of one deposit or one heads answer.
pub const MAX_DEPOSIT_ITEMS: usize = 4096;

/// A request to a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// What the requester holds; the answer is what it lacks (§7.7).
    Sync(SyncRequest),
    /// Bytes for the device holding `to`: a Welcome to `gid`. A mailbox holds it for
    /// that device.
    Direct {
        /// The target identity.
        to: IdentityKey,
        /// The group.
        gid: GroupId,
        /// The Welcome.
        bytes: Vec<u8>,
    },
    /// A prekey bundle of `of`, from that device or from a mailbox's stock.
    Bundle {
        /// Whose bundle.
        of: IdentityKey,
    },
    /// Mailbox: serve these groups (subscribe to their topics, keep their envelopes); the
    /// answer says what the mailbox holds of each.
    Serve {
        /// The groups.
        gids: Vec<GroupId>,
        /// The requester's identity (the answer reports its prekey stock).
        identity: IdentityKey,
        /// `identity`'s signature over the requester's peer ID: with it, the mailbox
        /// trusts this peer's sync requests as that identity's (and deletes the Welcomes
        /// they show were used).
        attestation: NetworkAttestation,
    },
    /// Mailbox: keep these envelopes of `gid` (what it lacked).
    Deposit {
        /// The group.
        gid: GroupId,
        /// The envelopes, in the order the depositor took them.
        envelopes: Vec<Vec<u8>>,
    },
    /// Mailbox: stock these prekeys of one identity (its signed prekey replaces the one
    /// held).
    Stock {
        /// The signed prekey.
        spk: Signed<SignedPrekey>,
        /// One-time prekeys, each handed out at most once.
        opks: Vec<Signed<OneTimePrekey>>,
    },
    /// A frame that did not decode, or whose length is over [`MAX_FRAME_BYTES`]: made by
    /// the codec when it reads one (the engine would drop the stream without telling the
    /// node), so that the node can strike its sender. Never sent: it encodes as an
    /// unknown request.
    Invalid(String),
}

/// What a mailbox holds of one group: per sender tag, the run of sequence numbers held
/// without gaps, and the short hashes of the first envelopes (identity senders) held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldHeads {
    /// The group.
    pub gid: GroupId,
    /// `(sender tag, lowest seq held, highest seq held without a gap from it)`.
    pub tags: Vec<([u8; 16], u64, u64)>,
    /// Short hashes of the first envelopes held.
    pub firsts: Vec<[u8; 16]>,
}

/// An answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// A sync page.
    Sync(SyncResponse),
    /// Taken (a direct message delivered or held, a deposit or a stock kept).
    Done,
    /// A bundle, or none known.
    Bundle(Option<Box<PrekeyBundle>>),
    /// A mailbox's answer to [`Request::Serve`]: what it holds of each group, and how
    /// many one-time prekeys of the requester it has in stock.
    Heads {
        /// Per group.
        groups: Vec<HeldHeads>,
        /// One-time prekeys in stock.
        stock: u64,
    },
    /// The peer refused the request.
    Refused(String),
}

const MAX_REASON: usize = 256;

impl Encode for Request {
    fn encode(&self, w: &mut Writer) {
        match self {
            Request::Sync(req) => {
                w.u8(1);
                w.opaque(&req.to_bytes());
            }
            Request::Direct { to, gid, bytes } => {
                w.u8(2);
                w.raw(&to.0);
                w.raw(gid.as_bytes());
                w.opaque(bytes);
            }
            Request::Bundle { of } => {
                w.u8(3);
                w.raw(&of.0);
            }
            Request::Serve { gids, identity, attestation } => {
                w.u8(4);
                w.list(gids, |w, g| w.raw(g.as_bytes()));
                w.raw(&identity.0);
                w.raw(&attestation.0);
            }
            Request::Deposit { gid, envelopes } => {
                w.u8(5);
                w.raw(gid.as_bytes());
                w.list(envelopes, |w, e| w.opaque(e));
            }
            Request::Stock { spk, opks } => {
                w.u8(6);
                spk.encode(w);
                w.list(opks, |w, o| o.encode(w));
            }
            Request::Invalid(_) => w.u8(0),
        }
    }
}

impl Decode for Request {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.u8()? {
            1 => Request::Sync(
                SyncRequest::from_bytes(r.opaque()?).map_err(|_| DecodeError::InvalidField("sync request"))?,
            ),
            2 => Request::Direct {
                to: dcgka::VerifyingKey(r.array()?),
                gid: GroupId(r.array()?),
                bytes: r.opaque()?.to_vec(),
            },
            3 => Request::Bundle { of: dcgka::VerifyingKey(r.array()?) },
            4 => {
                let gids = r.list(32, |r| Ok(GroupId(r.array()?)))?;
                if gids.len() > MAX_DEPOSIT_ITEMS {
                    return Err(DecodeError::InvalidField("too many groups"));
                }
                let identity = dcgka::VerifyingKey(r.array()?);
                Request::Serve { gids, identity, attestation: NetworkAttestation(r.array()?) }
            }
            5 => {
                let gid = GroupId(r.array()?);
                let envelopes = r.list(1, |r| Ok(r.opaque()?.to_vec()))?;
                if envelopes.len() > MAX_DEPOSIT_ITEMS {
                    return Err(DecodeError::InvalidField("too many envelopes"));
                }
                Request::Deposit { gid, envelopes }
            }
            6 => Request::Stock { spk: Signed::decode(r)?, opks: r.list(1, Signed::decode)? },
            _ => return Err(DecodeError::InvalidField("unknown request")),
        })
    }
}

impl Encode for Response {
    fn encode(&self, w: &mut Writer) {
        match self {
            Response::Sync(resp) => {
                w.u8(1);
                w.opaque(&resp.to_bytes());
            }
            Response::Done => w.u8(2),
            Response::Bundle(b) => {
                w.u8(3);
                w.opt(b.as_ref(), |w, b| w.opaque(&b.to_bytes()));
            }
            Response::Heads { groups, stock } => {
                w.u8(4);
                w.list(groups, |w, g| {
                    w.raw(g.gid.as_bytes());
                    w.list(&g.tags, |w, (t, lo, hi)| {
                        w.raw(t);
                        w.var(*lo);
                        w.var(*hi);
                    });
                    w.list(&g.firsts, |w, h| w.raw(h));
                });
                w.var(*stock);
            }
            Response::Refused(reason) => {
                w.u8(5);
                let mut end = reason.len().min(MAX_REASON);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                w.opaque(&reason.as_bytes()[..end]);
            }
        }
    }
}

impl Decode for Response {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.u8()? {
            1 => Response::Sync(
                SyncResponse::from_bytes(r.opaque()?).map_err(|_| DecodeError::InvalidField("sync response"))?,
            ),
            2 => Response::Done,
            3 => Response::Bundle(r.opt(|r| PrekeyBundle::from_bytes(r.opaque()?).map(Box::new))?),
            4 => {
                let groups = r.list(34, |r| {
                    Ok(HeldHeads {
                        gid: GroupId(r.array()?),
                        tags: r.list(18, |r| Ok((r.array()?, r.var()?, r.var()?)))?,
                        firsts: r.list(16, |r| r.array())?,
                    })
                })?;
                if groups.len() > MAX_DEPOSIT_ITEMS {
                    return Err(DecodeError::InvalidField("too many groups"));
                }
                Response::Heads { groups, stock: r.var()? }
            }
            5 => {
                let reason = r.opaque()?;
                if reason.len() > MAX_REASON {
                    return Err(DecodeError::InvalidField("reason too long"));
                }
                Response::Refused(String::from_utf8_lossy(reason).into_owned())
            }
            _ => return Err(DecodeError::InvalidField("unknown response")),
        })
    }
}

/// The request-response codec: `len:u32 (big-endian) ‖ payload`, payload at most
/// [`MAX_FRAME_BYTES`].
#[derive(Clone, Copy, Debug, Default)]
pub struct FrameCodec;

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(invalid(format!("frame of {len} bytes, the maximum is {MAX_FRAME_BYTES}")));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, payload: &[u8]) -> std::io::Result<()> {
    if payload.len() > MAX_FRAME_BYTES {
        return Err(invalid(format!("frame of {} bytes, the maximum is {MAX_FRAME_BYTES}", payload.len())));
    }
    let len = u32::try_from(payload.len()).map_err(invalid)?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(payload).await?;
    io.close().await
}

/// Decodes a frame's payload with the frame's own bound.
fn decode<T: Decode>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut r = Reader::with_max_size(bytes, MAX_FRAME_BYTES)?;
    let v = T::decode(&mut r)?;
    r.finish()?;
    Ok(v)
}

impl libp2p::request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Request> {
        match read_frame(io).await {
            Ok(frame) => Ok(decode(&frame).unwrap_or_else(|e| Request::Invalid(e.to_string()))),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Ok(Request::Invalid(e.to_string())),
            Err(e) => Err(e),
        }
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Response> {
        decode(&read_frame(io).await?).map_err(invalid)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> std::io::Result<()> {
        write_frame(io, &req.to_bytes()).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: Response,
    ) -> std::io::Result<()> {
        write_frame(io, &resp.to_bytes()).await
    }
}
