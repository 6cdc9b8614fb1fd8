//! What happens to one received frame, between the link that received it and the links it
//! leaves by: the link semantics first (ARP and the debug services, answered in place), then
//! the firewall engine on the frame **in its private slot** (NAT rewrites it there), then the
//! engine's [`Decision`] carried out through [`Links`].
//!
//! No payload byte is copied here: a forwarded frame leaves in the slot it arrived in. The
//! exceptions are counted ([`PipelineCounters::internal_copy_bytes`]): a frame that did not
//! start at offset 0 of its slot, and fragments (each a new frame). Replies the engine builds
//! (ICMP) are written into a scratch buffer and copied into a slot of their own.

use firewall::conntrack::ClientId;
use firewall::forward::{self, ChecksumState, Decision, Egress, Firewall, Ingress, Rx};

use crate::downlink::{ClientLink, Downlink, LinkVerdict};
use crate::uplink::{HostVerdict, UplinkHost};
use xen_front::netif::ChecksumOffload;

/// The largest reply the engine writes (echo replies of reassembled datagrams included).
pub const REPLY_MAX: usize = 4096;

/// The links the pipeline sends on. The appliance implements it over the grant pool, the
/// netfront and the netback; tests over plain buffers.
pub trait Links {
    /// A private buffer (a grant-pool slot): nobody else can read or write it.
    type Buf: AsRef<[u8]> + AsMut<[u8]>;
    /// A free buffer, if any.
    fn take(&mut self) -> Option<Self::Buf>;
    /// Gives a buffer back.
    fn put_back(&mut self, buf: Self::Buf);
    /// Sends `buf[..len]` on the uplink; `forwarded`: it is the received frame passed on (not
    /// a reply or a fragment we built). `Err` gives the buffer back (the link is down or
    /// full): the pipeline counts the drop.
    fn to_uplink(&mut self, buf: Self::Buf, len: usize, csum: ChecksumState, forwarded: bool) -> Result<(), Self::Buf>;
    /// Sends `buf[..len]` to a client (`forwarded` as for [`to_uplink`](Self::to_uplink)).
    /// `Err` gives the buffer back.
    fn to_client(
        &mut self,
        to: ClientId,
        buf: Self::Buf,
        len: usize,
        csum: ChecksumState,
        forwarded: bool,
    ) -> Result<(), Self::Buf>;
}

/// What the pipeline did (the engine counts its own decisions and drop causes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineCounters {
    /// Frames from clients.
    pub from_clients: u64,
    /// Frames from the uplink.
    pub from_uplink: u64,
    /// Frames answered by a link itself (ARP, debug echo).
    pub link_replies: u64,
    /// Frames dropped by a link (malformed, ARP not for us, …).
    pub link_drops: u64,
    /// Frames forwarded (the engine said forward and the link took them).
    pub forwarded: u64,
    /// Their bytes.
    pub forwarded_bytes: u64,
    /// Replies the engine built and a link took (ICMP echo replies and errors).
    pub engine_replies: u64,
    /// Fragments sent.
    pub fragments: u64,
    /// Frames (forwarded, replies, fragments) a link refused: down, or its ring full.
    pub egress_refused: u64,
    /// Replies or fragments not built for want of a free buffer.
    pub no_buffer: u64,
    /// Bytes of forwarded frames copied by the pipeline itself (misaligned frames moved to
    /// offset 0, fragments). Zero in the normal case: NAT works in place.
    pub internal_copy_bytes: u64,
    /// Frames that had to be moved to offset 0 first.
    pub realigned: u64,
}

/// The per-frame pipeline.
pub struct Pipeline {
    reply: [u8; REPLY_MAX],
    /// What happened.
    pub counters: PipelineCounters,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Pipeline {
    /// A pipeline with zeroed counters (`const`: put it in a static).
    pub const fn new() -> Self {
        Pipeline {
            reply: [0; REPLY_MAX],
            counters: PipelineCounters {
                from_clients: 0,
                from_uplink: 0,
                link_replies: 0,
                link_drops: 0,
                forwarded: 0,
                forwarded_bytes: 0,
                engine_replies: 0,
                fragments: 0,
                egress_refused: 0,
                no_buffer: 0,
                internal_copy_bytes: 0,
                realigned: 0,
            },
        }
    }

    /// A frame from client `id` (`buf[..len]`, gathered from its TX ring into a private slot).
    #[allow(clippy::too_many_arguments)]
    pub fn client_frame<L: Links, const N: usize, const B: usize, const C: usize>(
        &mut self,
        fw: &mut Firewall<N, B, C>,
        down: &mut Downlink,
        links: &mut L,
        id: ClientId,
        client: &ClientLink,
        mut buf: L::Buf,
        len: usize,
        csum: ChecksumState,
        now: u64,
        rng: &mut impl FnMut() -> u32,
    ) {
        self.counters.from_clients += 1;
        let Some(frame) = buf.as_mut().get_mut(..len) else {
            self.counters.link_drops += 1;
            links.put_back(buf);
            return;
        };
        match down.handle(client, frame) {
            LinkVerdict::Reply { len } => {
                self.counters.link_replies += 1;
                // ARP replies carry no L4 checksum; the UDP echo keeps the request's state.
                if let Err(b) = links.to_client(id, buf, len, csum, false) {
                    self.counters.egress_refused += 1;
                    links.put_back(b);
                }
                return;
            }
            LinkVerdict::Dropped(_) => {
                self.counters.link_drops += 1;
                links.put_back(buf);
                return;
            }
            LinkVerdict::Firewall => {}
        }
        let rx = Rx { from: Ingress::Client(id), len, csum };
        let d = fw.process(rx, buf.as_mut(), &mut self.reply, now, rng);
        self.carry_out(links, buf, d, 0);
    }

    /// A frame from the uplink at `buf[offset..offset + len]` (a slot revoked from `sys-net`,
    /// private again), with the checksum flags the backend gave.
    #[allow(clippy::too_many_arguments)]
    pub fn uplink_frame<L: Links, const N: usize, const B: usize, const C: usize>(
        &mut self,
        fw: &mut Firewall<N, B, C>,
        host: &mut UplinkHost,
        links: &mut L,
        mut buf: L::Buf,
        offset: usize,
        len: usize,
        csum: ChecksumOffload,
        now: u64,
        rng: &mut impl FnMut() -> u32,
    ) {
        self.counters.from_uplink += 1;
        let Some(frame) = buf.as_mut().get_mut(offset..offset + len) else {
            self.counters.link_drops += 1;
            links.put_back(buf);
            return;
        };
        match host.handle(frame, csum) {
            HostVerdict::Reply { len, csum } if offset == 0 => {
                self.counters.link_replies += 1;
                if let Err(b) = links.to_uplink(buf, len, checksum_state(csum), false) {
                    self.counters.egress_refused += 1;
                    links.put_back(b);
                }
                return;
            }
            HostVerdict::Consumed => {
                links.put_back(buf);
                return;
            }
            // (A debug reply not at offset 0 is not worth a move.)
            HostVerdict::Reply { .. } | HostVerdict::Dropped(_) => {
                self.counters.link_drops += 1;
                links.put_back(buf);
                return;
            }
            HostVerdict::NotForUs => {}
        }
        if offset != 0 {
            // The engine works on frames at the start of their slot. Linux netback always
            // writes at offset 0; a backend that does not costs a move, counted.
            buf.as_mut().copy_within(offset..offset + len, 0);
            self.counters.realigned += 1;
        }
        let rx = Rx { from: Ingress::Uplink, len, csum: checksum_state(csum) };
        let d = fw.process(rx, buf.as_mut(), &mut self.reply, now, rng);
        let moved = if offset != 0 { len } else { 0 };
        self.carry_out(links, buf, d, moved);
    }

    /// Carries out the engine's decision about the frame in `buf`. `moved`: bytes the
    /// pipeline already copied for it.
    fn carry_out<L: Links>(&mut self, links: &mut L, buf: L::Buf, d: Decision, moved: usize) {
        match d {
            Decision::Forward { to, len, csum } => {
                if self.send(links, to, buf, len, csum, true) {
                    self.counters.forwarded += 1;
                    self.counters.forwarded_bytes += len as u64;
                    self.counters.internal_copy_bytes += moved as u64;
                }
            }
            Decision::Fragment { to, len, mtu, count } => {
                for i in 0..count {
                    let Some(mut out) = links.take() else {
                        self.counters.no_buffer += 1;
                        break;
                    };
                    match forward::fragment(&buf.as_ref()[..len], mtu, i, out.as_mut()) {
                        Some(n) => {
                            if self.send(links, to, out, n, ChecksumState::Complete, false) {
                                self.counters.fragments += 1;
                                self.counters.internal_copy_bytes += n as u64;
                            }
                        }
                        None => links.put_back(out),
                    }
                }
                links.put_back(buf);
            }
            Decision::Reply { to, len, .. } => {
                links.put_back(buf);
                let Some(mut out) = links.take() else {
                    self.counters.no_buffer += 1;
                    return;
                };
                let Some(dst) = out.as_mut().get_mut(..len) else {
                    links.put_back(out);
                    return;
                };
                dst.copy_from_slice(&self.reply[..len]);
                if self.send(links, to, out, len, ChecksumState::Complete, false) {
                    self.counters.engine_replies += 1;
                }
            }
            Decision::Held | Decision::Consumed | Decision::Drop(_) => links.put_back(buf),
        }
    }

    /// Sends on `to`; a refusal is counted and the buffer goes back.
    fn send<L: Links>(
        &mut self,
        links: &mut L,
        to: Egress,
        buf: L::Buf,
        len: usize,
        csum: ChecksumState,
        forwarded: bool,
    ) -> bool {
        let r = match to {
            Egress::Uplink => links.to_uplink(buf, len, csum, forwarded),
            Egress::Client(id) => links.to_client(id, buf, len, csum, forwarded),
        };
        match r {
            Ok(()) => true,
            Err(b) => {
                self.counters.egress_refused += 1;
                links.put_back(b);
                false
            }
        }
    }
}

/// The engine's view of a link's checksum flags: only `csum_blank` matters (the partial sum
/// is carried); `data_validated` alone changes nothing about the bytes.
pub fn checksum_state(csum: ChecksumOffload) -> ChecksumState {
    if csum.blank { ChecksumState::PartialPseudoHeader } else { ChecksumState::Complete }
}

/// The flags a frame leaves with: a partial sum must be flagged blank (and validated, which
/// Linux's netfront expects with it); a complete one is left for the receiver to check.
pub fn offload_flags(csum: ChecksumState) -> ChecksumOffload {
    ChecksumOffload {
        blank: csum == ChecksumState::PartialPseudoHeader,
        validated: csum == ChecksumState::PartialPseudoHeader,
    }
}

/// A client's firewall id for a netback vif slot (both are bounded by the vif count).
pub fn client_id(vif_index: u16) -> Option<ClientId> {
    ClientId::new(vif_index)
}
