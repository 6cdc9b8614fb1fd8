//! A connected vif's data link: the two ring pages mapped from the frontend into our
//! foreign-mapping window and the bound event channel.
//!
//! Each vif slot owns two fixed window GFNs (`base + 2 * slot` for TX, `+ 1` for RX), so a
//! page is never mapped twice at one GFN (Xen would crash us). A GFN whose unmap failed is
//! never used again: its slot is retired ([`Link::release`] reports it).

use crate::hypercall::XenError;
use crate::netif::{RxRing, TxRing};
use crate::platform::{DomId, EventChannels, Gfn, GrantHandle, GrantRef, GrantStatus, GrantTables, Port};
use crate::ring::BackRing;

use super::counters::Resources;

/// What the frontend wrote for the connection (parsed, not yet trusted by Xen).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct FrontConf {
    pub(super) tx_ref: u32,
    pub(super) rx_ref: u32,
    pub(super) evtchn: u32,
    pub(super) no_csum_offload: bool,
}

/// Why a connection could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ConnectError {
    /// Mapping the TX ring failed with this status (e.g. a read-only grant).
    MapTx(GrantStatus),
    /// Mapping the RX ring failed.
    MapRx(GrantStatus),
    /// Binding the event channel failed.
    Bind(XenError),
}

/// The mapped rings and bound port of a connected vif.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) tx: BackRing<TxRing>,
    pub(super) rx: BackRing<RxRing>,
    pub(super) port: Port,
    tx_map: (Gfn, GrantHandle),
    rx_map: (Gfn, GrantHandle),
}

/// The window GFNs of vif slot `index`.
pub(super) fn window_gfns(base: Gfn, index: usize) -> (Gfn, Gfn) {
    let tx = base.0 + 2 * index as u64;
    (Gfn(tx), Gfn(tx + 1))
}

impl Link {
    /// Maps both rings writable (the frontend must have granted them so) and binds the
    /// channel; on failure undoes what was done. The ring pages are attached as they are:
    /// only the frontend initialises them.
    pub(super) fn connect<X: EventChannels + GrantTables>(
        xen: &X,
        (tx_gfn, rx_gfn): (Gfn, Gfn),
        fe: DomId,
        conf: &FrontConf,
        res: &mut Resources,
    ) -> Result<Link, ConnectError> {
        let tx = xen.map_grant_ref(tx_gfn, fe, GrantRef(conf.tx_ref), false).map_err(ConnectError::MapTx)?;
        res.mapped_pages += 1;
        let rx = match xen.map_grant_ref(rx_gfn, fe, GrantRef(conf.rx_ref), false) {
            Ok(rx) => rx,
            Err(e) => {
                unmap(xen, tx_gfn, tx.handle, res);
                return Err(ConnectError::MapRx(e));
            }
        };
        res.mapped_pages += 1;
        let port = match xen.bind_interdomain(fe, Port(conf.evtchn)) {
            Ok(p) => p,
            Err(e) => {
                unmap(xen, tx_gfn, tx.handle, res);
                unmap(xen, rx_gfn, rx.handle, res);
                return Err(ConnectError::Bind(e));
            }
        };
        res.event_channels += 1;
        Ok(Link {
            tx: BackRing::attach(tx.page),
            rx: BackRing::attach(rx.page),
            port,
            tx_map: (tx_gfn, tx.handle),
            rx_map: (rx_gfn, rx.handle),
        })
    }

    /// Closes the channel and unmaps both rings. Returns false if an unmap failed: that
    /// window GFN may still hold a mapping and must never be mapped over.
    pub(super) fn release<X: EventChannels + GrantTables>(self, xen: &X, res: &mut Resources) -> bool {
        match xen.close(self.port) {
            Ok(()) => res.event_channels -= 1,
            Err(e) => {
                // The port is ours and bound; a failure means Xen already freed it.
                log::warn!("netback: closing event channel {} failed: {:?}", self.port.0, e);
                res.event_channels -= 1;
            }
        }
        let a = unmap(xen, self.tx_map.0, self.tx_map.1, res);
        let b = unmap(xen, self.rx_map.0, self.rx_map.1, res);
        a && b
    }
}

fn unmap<X: GrantTables>(xen: &X, at: Gfn, handle: GrantHandle, res: &mut Resources) -> bool {
    match xen.unmap_grant_ref(at, handle) {
        Ok(()) => {
            res.mapped_pages -= 1;
            true
        }
        Err(e) => {
            log::error!("netback: unmapping ring at gfn {:#x} failed: {:?}; slot retired", at.0, e);
            false
        }
    }
}
