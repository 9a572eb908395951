//! Kernel routes into the TUN (rtnetlink), so the host and the LAN behind it send a site's prefixes
//! to the data plane.

use std::net::IpAddr;

use ipnet::IpNet;
use rtnetlink::{Handle, RouteMessageBuilder};

/// Adds and removes routes `prefix dev <tun>` in the main table.
pub struct KernelRoutes {
    handle: Handle,
    ifindex: u32,
}

impl KernelRoutes {
    /// Opens a netlink connection (spawned on the current tokio runtime).
    pub fn new(ifindex: u32) -> std::io::Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Self { handle, ifindex })
    }

    fn message(&self, prefix: IpNet) -> rtnetlink::packet_route::route::RouteMessage {
        RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(prefix.addr(), prefix.prefix_len())
            .map(|b| b.output_interface(self.ifindex).build())
            .unwrap_or_default()
    }

    /// Routes `prefix` into the TUN, replacing any route for the same prefix.
    pub async fn add(&self, prefix: IpNet) -> Result<(), rtnetlink::Error> {
        self.handle
            .route()
            .add(self.message(prefix))
            .replace()
            .execute()
            .await
    }

    /// Assigns `addr` (as a host address) to the TUN, so local sockets can use it, e.g. the gateway's BGP
    /// peering address. An address already present is not an error.
    pub async fn add_address(&self, addr: IpAddr) -> Result<(), rtnetlink::Error> {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        match self
            .handle
            .address()
            .add(self.ifindex, addr, len)
            .execute()
            .await
        {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            other => other,
        }
    }

    fn via_message(
        prefix: IpNet,
        gateway: IpAddr,
        metric: u32,
    ) -> Option<rtnetlink::packet_route::route::RouteMessage> {
        RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(prefix.addr(), prefix.prefix_len())
            .ok()?
            .gateway(gateway)
            .ok()
            .map(|b| b.priority(metric).build())
    }

    /// Routes `prefix` via `gateway` (a neighbour on a LAN) with `metric`, e.g. an active-active
    /// instance's backup route to the other instance; a route with a better metric still wins.
    pub async fn add_via(
        &self,
        prefix: IpNet,
        gateway: IpAddr,
        metric: u32,
    ) -> Result<(), rtnetlink::Error> {
        let Some(message) = Self::via_message(prefix, gateway, metric) else {
            return Ok(());
        };
        self.handle.route().add(message).replace().execute().await
    }

    /// Removes a route added by [`KernelRoutes::add_via`] (a missing route is not an error).
    pub async fn remove_via(
        &self,
        prefix: IpNet,
        gateway: IpAddr,
        metric: u32,
    ) -> Result<(), rtnetlink::Error> {
        let Some(message) = Self::via_message(prefix, gateway, metric) else {
            return Ok(());
        };
        missing_is_ok(self.handle.route().del(message).execute().await)
    }

    /// Removes the route for `prefix` (a missing route is not an error).
    pub async fn remove(&self, prefix: IpNet) -> Result<(), rtnetlink::Error> {
        missing_is_ok(
            self.handle
                .route()
                .del(self.message(prefix))
                .execute()
                .await,
        )
    }
}

/// A route delete that found no such route (ESRCH) leaves the table as asked: not an error.
fn missing_is_ok(result: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match result {
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => Ok(()),
        other => other,
    }
}
