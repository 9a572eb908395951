//! Proposals (RFC 7296 §3.3): what we offer or accept, how the responder chooses (§2.7: the first of
//! the peer's proposals we accept, in the peer's order), and strongSwan-style text for proposal diffs.

use crate::crypto::{DhGroup, Encryption, IkeSuite, Integrity, Prf};
use crate::message::{Proposal, Transform, protocol, transform_type};

/// One proposal's worth of acceptable transforms: any combination of the listed ones is acceptable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProposalSpec {
    /// Encryption transforms, in preference order.
    pub encryption: Vec<Encryption>,
    /// Integrity transforms (empty for AEAD-only proposals).
    pub integrity: Vec<Integrity>,
    /// PRFs (IKE only).
    pub prf: Vec<Prf>,
    /// DH groups (IKE: required; ESP: the PFS groups, empty for no PFS).
    pub dh: Vec<DhGroup>,
}

/// What was chosen for an ESP Child SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspSuite {
    /// Encryption.
    pub encryption: Encryption,
    /// Integrity (None for AEAD).
    pub integrity: Option<Integrity>,
    /// PFS group of this exchange, if any.
    pub dh: Option<DhGroup>,
    /// Extended sequence numbers.
    pub esn: bool,
}

impl std::fmt::Display for EspSuite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.encryption.name())?;
        if let Some(i) = self.integrity {
            write!(f, "/{}", i.name())?;
        }
        if let Some(d) = self.dh {
            write!(f, "/{}", d.name())?;
        }
        write!(f, "/{}", if self.esn { "ESN" } else { "NO_EXT_SEQ" })
    }
}

impl ProposalSpec {
    /// The wire proposal (numbered `number`, for `protocol`, with `spi`).
    pub fn to_proposal(&self, number: u8, protocol_id: u8, spi: Vec<u8>) -> Proposal {
        let mut transforms: Vec<Transform> =
            self.encryption.iter().map(|e| e.transform()).collect();
        if protocol_id == protocol::IKE {
            transforms.extend(self.prf.iter().map(|p| Transform {
                kind: transform_type::PRF,
                id: p.id(),
                key_len: None,
            }));
        }
        transforms.extend(self.integrity.iter().map(|i| Transform {
            kind: transform_type::INTEG,
            id: i.id(),
            key_len: None,
        }));
        transforms.extend(self.dh.iter().map(|d| Transform {
            kind: transform_type::DH,
            id: d.id(),
            key_len: None,
        }));
        if protocol_id == protocol::ESP {
            // Both sequence-number modes (RFC 4303 §2.2.1), 32-bit first: the peer picks.
            for id in [0, 1] {
                transforms.push(Transform {
                    kind: transform_type::ESN,
                    id,
                    key_len: None,
                });
            }
        }
        Proposal {
            number,
            protocol: protocol_id,
            spi,
            transforms,
        }
    }

    /// strongSwan-style text of every combination's parts, e.g. `AES_GCM_16_256/PRF_HMAC_SHA2_256/ECP_256`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let join = |v: Vec<String>| v.join("|");
        parts.push(join(self.encryption.iter().map(|e| e.name()).collect()));
        if !self.integrity.is_empty() {
            parts.push(join(
                self.integrity
                    .iter()
                    .map(|i| i.name().to_string())
                    .collect(),
            ));
        }
        if !self.prf.is_empty() {
            parts.push(join(
                self.prf.iter().map(|p| p.name().to_string()).collect(),
            ));
        }
        if !self.dh.is_empty() {
            parts.push(join(self.dh.iter().map(|d| d.name().to_string()).collect()));
        }
        parts.join("/")
    }
}

/// Renders a received proposal as text, naming transforms we do not support by number.
pub fn describe_proposal(p: &Proposal) -> String {
    let mut by_type: [Vec<String>; 6] = Default::default();
    for t in &p.transforms {
        let name = match t.kind {
            transform_type::ENCR => Encryption::from_transform(t)
                .map(|e| e.name())
                .unwrap_or_else(|| {
                    format!(
                        "ENCR_{}{}",
                        t.id,
                        t.key_len.map(|k| format!("_{k}")).unwrap_or_default()
                    )
                }),
            transform_type::PRF => Prf::from_id(t.id)
                .map(|p| p.name().to_string())
                .unwrap_or_else(|| format!("PRF_{}", t.id)),
            transform_type::INTEG => Integrity::from_id(t.id)
                .map(|i| i.name().to_string())
                .unwrap_or_else(|| format!("INTEG_{}", t.id)),
            transform_type::DH => DhGroup::from_id(t.id)
                .map(|d| d.name().to_string())
                .unwrap_or_else(|| format!("DH_{}", t.id)),
            transform_type::ESN => {
                if t.id == 1 {
                    "ESN".into()
                } else {
                    "NO_EXT_SEQ".into()
                }
            }
            other => format!("T{other}_{}", t.id),
        };
        if let Some(slot) = by_type.get_mut(usize::from(t.kind)) {
            slot.push(name);
        }
    }
    by_type
        .iter()
        .skip(1)
        .filter(|v| !v.is_empty())
        .map(|v| v.join("|"))
        .collect::<Vec<_>>()
        .join("/")
}

fn first_match<T: Copy + PartialEq>(
    peer: impl Iterator<Item = Option<T>>,
    ours: &[T],
) -> Option<Option<T>> {
    let mut saw_any = false;
    for t in peer {
        saw_any = true;
        if let Some(t) = t
            && ours.contains(&t)
        {
            return Some(Some(t));
        }
    }
    if saw_any { None } else { Some(None) }
}

fn transforms_of(p: &Proposal, kind: u8) -> impl Iterator<Item = &Transform> {
    p.transforms.iter().filter(move |t| t.kind == kind)
}

/// Responder choice for an IKE SA (§2.7): the first peer proposal that one of ours accepts.
/// Returns the chosen suite and the peer proposal number.
pub fn choose_ike(peer: &[Proposal], ours: &[ProposalSpec]) -> Option<(IkeSuite, u8)> {
    for p in peer.iter().filter(|p| p.protocol == protocol::IKE) {
        for spec in ours {
            let Some(Some(encryption)) = first_match(
                transforms_of(p, transform_type::ENCR).map(Encryption::from_transform),
                &spec.encryption,
            ) else {
                continue;
            };
            let Some(Some(prf)) = first_match(
                transforms_of(p, transform_type::PRF).map(|t| Prf::from_id(t.id)),
                &spec.prf,
            ) else {
                continue;
            };
            let integrity = if encryption.is_aead() {
                // RFC 5282 §8: with an AEAD cipher the integrity transform is absent (or NONE).
                if transforms_of(p, transform_type::INTEG).any(|t| t.id != 0) {
                    continue;
                }
                None
            } else {
                match first_match(
                    transforms_of(p, transform_type::INTEG).map(|t| Integrity::from_id(t.id)),
                    &spec.integrity,
                ) {
                    Some(Some(i)) => Some(i),
                    _ => continue,
                }
            };
            let Some(Some(dh)) = first_match(
                transforms_of(p, transform_type::DH).map(|t| DhGroup::from_id(t.id)),
                &spec.dh,
            ) else {
                continue;
            };
            return Some((
                IkeSuite {
                    encryption,
                    integrity,
                    prf,
                    dh,
                },
                p.number,
            ));
        }
    }
    None
}

/// Responder choice for an ESP Child SA. `pfs_required` is the KE group the exchange carries, if any.
/// Returns the suite and the chosen peer proposal (for its SPI).
pub fn choose_esp<'a>(
    peer: &'a [Proposal],
    ours: &[ProposalSpec],
    ke_group: Option<DhGroup>,
) -> Option<(EspSuite, &'a Proposal)> {
    for p in peer
        .iter()
        .filter(|p| p.protocol == protocol::ESP && p.spi.len() == 4)
    {
        for spec in ours {
            let Some(Some(encryption)) = first_match(
                transforms_of(p, transform_type::ENCR).map(Encryption::from_transform),
                &spec.encryption,
            ) else {
                continue;
            };
            let integrity = if encryption.is_aead() {
                if transforms_of(p, transform_type::INTEG).any(|t| t.id != 0) {
                    continue;
                }
                None
            } else {
                match first_match(
                    transforms_of(p, transform_type::INTEG).map(|t| Integrity::from_id(t.id)),
                    &spec.integrity,
                ) {
                    Some(Some(i)) => Some(i),
                    _ => continue,
                }
            };
            // PFS: with a KE payload the group must be proposed and acceptable; without, the proposal must
            // allow "no DH" (no DH transform, or DH NONE).
            let peer_groups: Vec<u16> =
                transforms_of(p, transform_type::DH).map(|t| t.id).collect();
            let dh = match ke_group {
                Some(g) => {
                    if !peer_groups.contains(&g.id()) || !spec.dh.contains(&g) {
                        continue;
                    }
                    Some(g)
                }
                None => {
                    if !(peer_groups.is_empty() || peer_groups.contains(&0)) {
                        continue;
                    }
                    None
                }
            };
            // ESN (RFC 4303 §2.2.1): the peer's first mode, both are supported; none listed means 32-bit.
            let esn = match transforms_of(p, transform_type::ESN).find(|t| t.id <= 1) {
                Some(t) => t.id == 1,
                None if transforms_of(p, transform_type::ESN).next().is_none() => false,
                None => continue,
            };
            return Some((
                EspSuite {
                    encryption,
                    integrity,
                    dh,
                    esn,
                },
                p,
            ));
        }
    }
    None
}

/// vgw's default IKE proposals when a connection has no ipsecPolicies: any combination of the
/// non-legacy algorithms, AEAD first, as strongSwan's defaults do.
pub fn default_ike() -> Vec<ProposalSpec> {
    let prf = vec![
        Prf::HmacSha256,
        Prf::HmacSha384,
        Prf::HmacSha512,
        Prf::HmacSha1,
    ];
    let dh = vec![
        DhGroup::Ecp256,
        DhGroup::Curve25519,
        DhGroup::Ecp384,
        DhGroup::Modp2048,
    ];
    vec![
        ProposalSpec {
            encryption: vec![
                Encryption::AesGcm16(256),
                Encryption::AesGcm16(128),
                Encryption::ChaCha20Poly1305,
            ],
            integrity: vec![],
            prf: prf.clone(),
            dh: dh.clone(),
        },
        ProposalSpec {
            encryption: vec![Encryption::AesCbc(256), Encryption::AesCbc(128)],
            integrity: vec![
                Integrity::HmacSha256_128,
                Integrity::HmacSha384_192,
                Integrity::HmacSha512_256,
                Integrity::HmacSha1_96,
            ],
            prf,
            dh,
        },
    ]
}

/// vgw's default ESP proposals: AEAD first, then CBC with HMAC; no PFS is required, any listed group is
/// accepted when the peer uses PFS.
pub fn default_esp(accept_pfs: bool) -> Vec<ProposalSpec> {
    let dh = if accept_pfs {
        vec![
            DhGroup::Ecp256,
            DhGroup::Curve25519,
            DhGroup::Ecp384,
            DhGroup::Modp2048,
        ]
    } else {
        vec![]
    };
    vec![
        ProposalSpec {
            encryption: vec![
                Encryption::AesGcm16(256),
                Encryption::AesGcm16(128),
                Encryption::ChaCha20Poly1305,
            ],
            integrity: vec![],
            prf: vec![],
            dh: dh.clone(),
        },
        ProposalSpec {
            encryption: vec![Encryption::AesCbc(256), Encryption::AesCbc(128)],
            integrity: vec![
                Integrity::HmacSha256_128,
                Integrity::HmacSha384_192,
                Integrity::HmacSha512_256,
                Integrity::HmacSha1_96,
            ],
            prf: vec![],
            dh,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responder_picks_in_peer_order() {
        let ours = default_ike();
        let peer_spec = ProposalSpec {
            encryption: vec![Encryption::AesCbc(256)],
            integrity: vec![Integrity::HmacSha256_128],
            prf: vec![Prf::HmacSha256],
            dh: vec![DhGroup::Modp2048, DhGroup::Ecp256],
        };
        let peer = vec![peer_spec.to_proposal(1, protocol::IKE, vec![])];
        let (suite, n) = choose_ike(&peer, &ours).unwrap();
        assert_eq!(n, 1);
        assert_eq!(suite.dh, DhGroup::Modp2048, "the peer's order wins");
        assert_eq!(
            describe_proposal(&peer[0]),
            "AES_CBC_256/PRF_HMAC_SHA2_256/HMAC_SHA2_256_128/MODP_2048|ECP_256"
        );
        let legacy = ProposalSpec {
            encryption: vec![Encryption::TripleDes],
            integrity: vec![Integrity::HmacSha1_96],
            prf: vec![Prf::HmacSha1],
            dh: vec![DhGroup::Modp1024],
        };
        assert!(choose_ike(&[legacy.to_proposal(1, protocol::IKE, vec![])], &ours).is_none());
    }

    #[test]
    fn esp_pfs_rules() {
        let ours = default_esp(true);
        let peer = ProposalSpec {
            encryption: vec![Encryption::AesGcm16(256)],
            integrity: vec![],
            prf: vec![],
            dh: vec![DhGroup::Modp2048],
        };
        let p = vec![peer.to_proposal(1, protocol::ESP, vec![1, 2, 3, 4])];
        assert!(choose_esp(&p, &ours, Some(DhGroup::Modp2048)).is_some());
        assert!(
            choose_esp(&p, &ours, None).is_none(),
            "a PFS-only proposal needs a KE"
        );
        let nopfs = ProposalSpec { dh: vec![], ..peer };
        let p = vec![nopfs.to_proposal(1, protocol::ESP, vec![1, 2, 3, 4])];
        let (suite, _) = choose_esp(&p, &ours, None).unwrap();
        assert_eq!(suite.encryption, Encryption::AesGcm16(256));
    }
}
