//! A scripted IKEv2 peer for the fuzz targets: it runs IKE_SA_INIT (and, when asked, a valid
//! IKE_AUTH) against a real [`Endpoint`] in memory, derives the same keys (RFC 7296 §2.14) with the
//! crate's public crypto, and then seals whatever bytes the fuzzer chose as the inner payload chain
//! of an SK payload (§3.14) or of RFC 7383 Encrypted Fragment payloads. The endpoint therefore
//! decrypts the fuzz input and runs its payload-chain handling: IKE_AUTH (ID, AUTH, CERT, CP, SA,
//! TS), CREATE_CHILD_SA, INFORMATIONAL and fragment reassembly.
//!
//! Nothing here is a hook in the engine: a fuzz target sees exactly what a peer on the wire could
//! send once it holds the keys of a half-open or established IKE SA.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use vgw_ike::crypto::{
    DhGroup, DhPrivate, Encryption, IkeKeys, IkeSuite, Integrity, Prf, SkCipher, psk_auth,
};
use vgw_ike::message::{
    HEADER_LEN, Header, Identity, Message, Notify, Payload, Proposal, TrafficSelector, Transform,
    emit_payloads, exchange, find_ke, find_nonce, flags, notify, payload_type, protocol,
    transform_type,
};
use vgw_ike::proposal::{ProposalSpec, default_esp};
use vgw_ike::{ChildConfig, Config, Endpoint, Mode, PeerAuth, TrustStore};

/// The connection id the endpoint under test uses.
pub const CONN: u32 = 1;
/// The pre-shared key both sides hold.
pub const PSK: &[u8] = b"fuzzing-psk-0123456789";
/// The scripted peer's address as the endpoint sees it.
pub const PEER: &str = "198.18.0.1:500";
/// The endpoint's address.
pub const LOCAL: &str = "198.18.0.2";

/// How the endpoint under test authenticates its peer and which suite it accepts; chosen by the
/// low bits of the fuzz input's first byte.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    /// AES-CBC + HMAC instead of AES-GCM (exercises the other SK code path).
    pub cbc: bool,
    /// The endpoint expects a certificate (CERT payloads are parsed and chain-validated).
    pub cert_peer: bool,
}

impl Variant {
    /// The variant a selector byte names.
    pub fn from_byte(b: u8) -> Variant {
        Variant {
            cbc: b & 1 != 0,
            cert_peer: b & 2 != 0,
        }
    }
}

fn spec(v: Variant) -> ProposalSpec {
    if v.cbc {
        ProposalSpec {
            encryption: vec![Encryption::AesCbc(256)],
            integrity: vec![Integrity::HmacSha256_128],
            prf: vec![Prf::HmacSha256],
            dh: vec![DhGroup::Curve25519],
        }
    } else {
        ProposalSpec {
            encryption: vec![Encryption::AesGcm16(256)],
            integrity: vec![],
            prf: vec![Prf::HmacSha256],
            dh: vec![DhGroup::Curve25519],
        }
    }
}

fn suite(v: Variant) -> IkeSuite {
    if v.cbc {
        IkeSuite {
            encryption: Encryption::AesCbc(256),
            integrity: Some(Integrity::HmacSha256_128),
            prf: Prf::HmacSha256,
            dh: DhGroup::Curve25519,
        }
    } else {
        IkeSuite {
            encryption: Encryption::AesGcm16(256),
            integrity: None,
            prf: Prf::HmacSha256,
            dh: DhGroup::Curve25519,
        }
    }
}

/// A self-signed root made once per process, so certificate mode has a trust anchor to validate
/// the fuzzer's CERT payloads against.
fn trust_store() -> Arc<TrustStore> {
    static STORE: OnceLock<Arc<TrustStore>> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .expect("key generation");
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "vgw fuzz root");
            let root = params.self_signed(&key).expect("self-signed root");
            Arc::new(TrustStore::new(vec![root.der().to_vec()], Vec::new()).expect("trust store"))
        })
        .clone()
}

/// The endpoint's configuration for `variant` in `mode`, with fragmentation at `fragment_size`.
pub fn config(v: Variant, mode: Mode) -> Config {
    let peer: SocketAddr = PEER.parse().expect("peer address");
    let local = LOCAL.parse().expect("local address");
    Config {
        local_addr: local,
        remote_addr: peer.ip(),
        remote_port: 500,
        local_id: Identity::from_ip(local),
        remote_id: Identity::from_ip(peer.ip()),
        psk: PSK.to_vec().into(),
        peer_auth: if v.cert_peer {
            PeerAuth::Certificate(trust_store())
        } else {
            PeerAuth::Psk
        },
        ike: vec![spec(v)],
        esp: default_esp(true),
        pfs: None,
        mode,
        children: vec![ChildConfig {
            local: vec![TrafficSelector::any_v4()],
            remote: vec![TrafficSelector::any_v4()],
        }],
        dpd_timeout: Duration::from_secs(45),
        ike_lifetime: Duration::from_secs(3600),
        child_lifetime: Duration::from_secs(600),
        child_lifetime_bytes: None,
        fragment_size: 1200,
        ..Default::default()
    }
}

fn id_body(id: &Identity) -> Vec<u8> {
    let mut v = vec![id.kind, 0, 0, 0];
    v.extend_from_slice(&id.data);
    v
}

/// One payload emitted on its own, its "next payload" byte set to `next`.
fn payload_bytes(p: Payload, next: u8) -> Vec<u8> {
    let mut out = Vec::new();
    emit_payloads(&mut out, &[p]);
    out[0] = next;
    out
}

/// The scripted peer and the endpoint under test, with the IKE SA's keys.
pub struct Harness {
    /// The endpoint under test.
    pub ep: Endpoint,
    /// The simulated clock.
    pub now: Instant,
    peer: SocketAddr,
    suite: IkeSuite,
    keys: IkeKeys,
    spi_i: u64,
    spi_r: u64,
    /// True when the scripted peer is the original initiator.
    we_initiate: bool,
    ni: Vec<u8>,
    nr: Vec<u8>,
    init_request: Vec<u8>,
    init_response: Vec<u8>,
    /// The message id of our next request.
    pub next_request: u32,
}

impl Harness {
    /// We initiate IKE_SA_INIT towards a responder-only endpoint; `None` when it did not answer
    /// with an acceptable IKE_SA_INIT response (a harness defect, not a finding).
    pub fn as_initiator(v: Variant, fragmentation: bool) -> Option<Harness> {
        let now = Instant::now();
        let mut ep = Endpoint::new();
        ep.set_config(CONN, config(v, Mode::ResponderOnly), now);
        let peer: SocketAddr = PEER.parse().ok()?;
        let suite = suite(v);
        let (dh, public) = DhPrivate::generate(suite.dh).ok()?;
        let spi_i = vgw_ike::crypto::random_spi64();
        let mut ni = vec![0u8; 32];
        vgw_ike::crypto::random(&mut ni);
        let mut payloads = vec![
            Payload::Sa(vec![spec(v).to_proposal(1, protocol::IKE, Vec::new())]),
            Payload::Ke {
                group: suite.dh.id(),
                data: public,
            },
            Payload::Nonce(ni.clone()),
        ];
        if fragmentation {
            payloads.push(Payload::Notify(Notify::new(
                notify::IKEV2_FRAGMENTATION_SUPPORTED,
                Vec::new(),
            )));
        }
        let request = Message {
            header: Header {
                spi_i,
                spi_r: 0,
                next_payload: 0,
                exchange: exchange::IKE_SA_INIT,
                flags: flags::INITIATOR,
                message_id: 0,
                length: 0,
            },
            payloads,
        }
        .emit();
        ep.handle_datagram(now, 500, peer, &request);
        let mut response = None;
        while let Some(t) = ep.poll_transmit() {
            response.get_or_insert(t.data);
        }
        while ep.poll_event().is_some() {}
        let response = response?;
        let m = Message::parse(&response).ok()?;
        let (_, ke) = find_ke(&m.payloads)?;
        let nr = find_nonce(&m.payloads)?.clone();
        let shared = dh.agree(ke).ok()?;
        let keys = IkeKeys::derive(&suite, &ni, &nr, &shared, spi_i, m.header.spi_r);
        Some(Harness {
            ep,
            now,
            peer,
            suite,
            keys,
            spi_i,
            spi_r: m.header.spi_r,
            we_initiate: true,
            ni,
            nr,
            init_request: request,
            init_response: response,
            next_request: 1,
        })
    }

    /// The endpoint initiates; we answer its IKE_SA_INIT and take its IKE_AUTH request. Returns the
    /// harness and the message id of that IKE_AUTH request (which a fuzz response then answers).
    pub fn as_responder(v: Variant) -> Option<(Harness, u32)> {
        let now = Instant::now();
        let mut ep = Endpoint::new();
        ep.set_config(CONN, config(v, Mode::Default), now);
        ep.initiate(CONN, now);
        ep.handle_timeout(now);
        let peer: SocketAddr = PEER.parse().ok()?;
        let mut request = None;
        while let Some(t) = ep.poll_transmit() {
            request.get_or_insert(t.data);
        }
        let request = request?;
        let m = Message::parse(&request).ok()?;
        if m.header.exchange != exchange::IKE_SA_INIT {
            return None;
        }
        let suite = suite(v);
        let (group, ke) = find_ke(&m.payloads)?;
        if group != suite.dh.id() {
            return None;
        }
        let ni = find_nonce(&m.payloads)?.clone();
        let (dh, public) = DhPrivate::generate(suite.dh).ok()?;
        let shared = dh.agree(ke).ok()?;
        let spi_r = vgw_ike::crypto::random_spi64();
        let mut nr = vec![0u8; 32];
        vgw_ike::crypto::random(&mut nr);
        let response = Message {
            header: Header {
                spi_i: m.header.spi_i,
                spi_r,
                next_payload: 0,
                exchange: exchange::IKE_SA_INIT,
                flags: flags::RESPONSE,
                message_id: 0,
                length: 0,
            },
            payloads: vec![
                Payload::Sa(vec![spec(v).to_proposal(1, protocol::IKE, Vec::new())]),
                Payload::Ke {
                    group: suite.dh.id(),
                    data: public,
                },
                Payload::Nonce(nr.clone()),
            ],
        }
        .emit();
        ep.handle_datagram(now, 500, peer, &response);
        let mut auth = None;
        while let Some(t) = ep.poll_transmit() {
            auth.get_or_insert(t.data);
        }
        while ep.poll_event().is_some() {}
        let auth = Message::parse(&auth?).ok()?;
        if auth.header.exchange != exchange::IKE_AUTH {
            return None;
        }
        let keys = IkeKeys::derive(&suite, &ni, &nr, &shared, m.header.spi_i, spi_r);
        let h = Harness {
            ep,
            now,
            peer,
            suite,
            keys,
            spi_i: m.header.spi_i,
            spi_r,
            we_initiate: false,
            ni,
            nr,
            init_request: request,
            init_response: response,
            next_request: 0,
        };
        Some((h, auth.header.message_id))
    }

    /// Our identity (the endpoint's configured remote id).
    pub fn our_id(&self) -> Identity {
        Identity::from_ip(self.peer.ip())
    }

    /// Our IDi/IDr payload followed by a valid PSK AUTH payload (§2.15), the AUTH's "next payload"
    /// being `next`: a prefix that makes the endpoint accept the rest of the fuzz chain as
    /// authenticated.
    pub fn auth_prefix(&self, next: u8) -> Vec<u8> {
        let id = self.our_id();
        let (first, nonce, sk_p) = if self.we_initiate {
            (&self.init_request, &self.nr, &self.keys.pi)
        } else {
            (&self.init_response, &self.ni, &self.keys.pr)
        };
        let auth = psk_auth(self.suite.prf, PSK, first, nonce, sk_p, &id_body(&id));
        let id_payload = if self.we_initiate {
            Payload::IdI(id)
        } else {
            Payload::IdR(id)
        };
        let mut out = payload_bytes(id_payload, payload_type::AUTH);
        out.extend(payload_bytes(
            Payload::Auth {
                method: 2,
                data: auth.to_vec(),
            },
            next,
        ));
        out
    }

    /// The first payload type of [`Harness::auth_prefix`].
    pub fn auth_prefix_first(&self) -> u8 {
        if self.we_initiate {
            payload_type::IDI
        } else {
            payload_type::IDR
        }
    }

    fn cipher(&self) -> SkCipher {
        if self.we_initiate {
            SkCipher::new(&self.suite, &self.keys.ei, &self.keys.ai)
        } else {
            SkCipher::new(&self.suite, &self.keys.er, &self.keys.ar)
        }
    }

    fn header(
        &self,
        next: u8,
        exchange: u8,
        response: bool,
        message_id: u32,
        len: usize,
    ) -> Vec<u8> {
        let mut f = if self.we_initiate {
            flags::INITIATOR
        } else {
            0
        };
        if response {
            f |= flags::RESPONSE;
        }
        let mut out = Vec::with_capacity(len);
        Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            next_payload: next,
            exchange,
            flags: f,
            message_id,
            length: len as u32,
        }
        .emit(&mut out);
        out
    }

    /// Seals `plain` (an inner payload chain starting with a payload of type `first`) as the SK
    /// payload of one message and hands it to the endpoint.
    pub fn send_sk(
        &mut self,
        exchange: u8,
        response: bool,
        message_id: u32,
        first: u8,
        plain: &[u8],
    ) {
        let c = self.cipher();
        let sk_len = 4 + c.overhead(plain.len()) + plain.len();
        let mut msg = self.header(
            payload_type::SK,
            exchange,
            response,
            message_id,
            HEADER_LEN + sk_len,
        );
        msg.push(first);
        msg.push(0);
        msg.extend_from_slice(&(sk_len as u16).to_be_bytes());
        if let Ok(m) = c.seal(msg, plain) {
            self.deliver(&m);
        }
    }

    /// Seals `part` as Encrypted Fragment `number` of `total` (RFC 7383 §2.5) and hands it over.
    #[allow(clippy::too_many_arguments)]
    pub fn send_fragment(
        &mut self,
        exchange: u8,
        message_id: u32,
        first: u8,
        number: u16,
        total: u16,
        part: &[u8],
    ) {
        let c = self.cipher();
        let skf_len = 8 + c.overhead(part.len()) + part.len();
        let mut msg = self.header(
            payload_type::SKF,
            exchange,
            false,
            message_id,
            HEADER_LEN + skf_len,
        );
        msg.push(first);
        msg.push(0);
        msg.extend_from_slice(&(skf_len as u16).to_be_bytes());
        msg.extend_from_slice(&number.to_be_bytes());
        msg.extend_from_slice(&total.to_be_bytes());
        if let Ok(m) = c.seal(msg, part) {
            self.deliver(&m);
        }
    }

    /// Hands a datagram to the endpoint and drains what it sends and reports.
    pub fn deliver(&mut self, datagram: &[u8]) {
        self.ep.handle_datagram(self.now, 500, self.peer, datagram);
        self.drain();
    }

    /// Drains transmissions and events; returns the transmitted datagrams.
    pub fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(t) = self.ep.poll_transmit() {
            out.push(t.data);
        }
        while self.ep.poll_event().is_some() {}
        out
    }

    /// Runs a valid IKE_AUTH (ID, AUTH, SA, TSi, TSr) as initiator so the IKE SA is established;
    /// false when the endpoint did not establish it.
    pub fn establish(&mut self) -> bool {
        let mut spi = [0u8; 4];
        vgw_ike::crypto::random(&mut spi);
        let rest = [
            Payload::Sa(vec![default_esp(true)[0].to_proposal(
                1,
                protocol::ESP,
                spi.to_vec(),
            )]),
            Payload::TsI(vec![TrafficSelector::any_v4()]),
            Payload::TsR(vec![TrafficSelector::any_v4()]),
        ];
        let mut tail = Vec::new();
        let first_rest = emit_payloads(&mut tail, &rest);
        let mut plain = self.auth_prefix(first_rest);
        plain.extend(tail);
        let first = self.auth_prefix_first();
        self.send_sk(exchange::IKE_AUTH, false, 1, first, &plain);
        self.next_request = 2;
        self.ep.is_established(CONN)
    }

    /// Answers the endpoint's IKE_AUTH request `message_id` with a valid response (IDr, AUTH, one
    /// AES-GCM ESP proposal, TSi, TSr); true when the endpoint then holds an established SA.
    pub fn accept_auth(&mut self, message_id: u32) -> bool {
        let mut spi = [0u8; 4];
        vgw_ike::crypto::random(&mut spi);
        let proposal = Proposal {
            number: 1,
            protocol: protocol::ESP,
            spi: spi.to_vec(),
            transforms: vec![
                Encryption::AesGcm16(256).transform(),
                Transform {
                    kind: transform_type::ESN,
                    id: 0,
                    key_len: None,
                },
            ],
        };
        let rest = [
            Payload::Sa(vec![proposal]),
            Payload::TsI(vec![TrafficSelector::any_v4()]),
            Payload::TsR(vec![TrafficSelector::any_v4()]),
        ];
        let mut tail = Vec::new();
        let first_rest = emit_payloads(&mut tail, &rest);
        let mut plain = self.auth_prefix(first_rest);
        plain.extend(tail);
        let first = self.auth_prefix_first();
        self.send_sk(exchange::IKE_AUTH, true, message_id, first, &plain);
        self.ep.is_established(CONN)
    }

    /// Advances the clock and runs the endpoint's timers.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.ep.handle_timeout(self.now);
        self.drain();
    }
}

/// Checks once per process that the scripted peer still reaches an established SA in both roles
/// (so a change in the engine cannot leave the targets silently fuzzing only the refusal path).
pub fn self_check() {
    static CHECK: std::sync::Once = std::sync::Once::new();
    CHECK.call_once(|| {
        for b in [0u8, 1] {
            let v = Variant::from_byte(b);
            let mut h = Harness::as_initiator(v, false).expect("harness: IKE_SA_INIT as initiator");
            assert!(
                h.establish(),
                "harness: a valid IKE_AUTH request did not establish ({v:?})"
            );
            let (mut h, id) = Harness::as_responder(v).expect("harness: IKE_SA_INIT as responder");
            assert!(
                h.accept_auth(id),
                "harness: a valid IKE_AUTH response did not establish ({v:?})"
            );
        }
    });
}

/// Splits fuzz input into records: a 1-byte tag, a 2-byte big-endian length and that many bytes
/// (shorter at the end). At most `max` records.
pub fn records(mut data: &[u8], max: usize) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 3 && out.len() < max {
        let tag = data[0];
        let len = usize::from(u16::from_be_bytes([data[1], data[2]]));
        let rest = &data[3..];
        let n = len.min(rest.len());
        out.push((tag, &rest[..n]));
        data = &rest[n..];
    }
    out
}
