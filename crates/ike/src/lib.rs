//! Sans-IO IKEv2 engine (RFC 7296): message codec, key derivation, proposals, exchanges.
//!
//! The engine knows nothing of sockets, threads or clocks: the caller passes datagrams and `Instant`s in
//! ([`Endpoint::handle_datagram`], [`Endpoint::handle_timeout`]) and takes datagrams, timers and events
//! out ([`Endpoint::poll_transmit`], [`Endpoint::poll_timeout`], [`Endpoint::poll_event`]). Child SA keys
//! leave as [`Event::ChildSaUp`]; the data plane installs them.
//!
//! Authentication is per connection ([`Config::local_auth`], [`Config::peer_auth`]): a pre-shared key
//! or certificates ([`cert`]: chain validation, revocation by thumbprint, RFC 7427 signatures). A
//! remote-access connection ([`RemoteAccess::Server`]) accepts road-warrior clients from any address,
//! each its own session id with addresses from a [`pool::AddressPool`] ([`Event::ClientUp`],
//! [`Event::ClientDown`], [`Endpoint::disconnect_client`], [`Endpoint::disconnect_thumbprint`]).

pub mod cert;
pub mod config;
pub mod crypto;
pub mod endpoint;
pub mod message;
pub mod pool;
pub mod proposal;
pub mod sa;

pub use cert::{LocalCertificate, PeerCertificate, RsaPadding, TrustStore};
pub use config::{
    CLIENT_CONN_BASE, ChildConfig, ChildSaKeys, ClientInfo, Config, ConnId, Event, Failure,
    LocalAuth, Mode, PeerAuth, Reason, RemoteAccess, RemoteAccessClient, RemoteAccessServer,
};
pub use endpoint::Endpoint;
pub use pool::{AddressPool, Lease};
pub use sa::Transmit;
