//! The REST API's JSON bodies: a PUT of a virtual network gateway, a local network gateway or a
//! connection (the resource structs' serde Deserialize), then the whole-state validation with that
//! resource in place. Input: byte 0 picks the resource, the rest is the body. Nothing may panic.
//!
//! Short run: cd crates/control/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run api_json --sanitizer none
#![no_main]

use libfuzzer_sys::fuzz_target;
use vgw_control::model::{ConnectionSpec, LocalGatewaySpec, VnetGatewaySpec};
use vgw_control::state::DesiredState;
use vgw_control::validate::validate_state;

fuzz_target!(|data: &[u8]| {
    let [sel, body @ ..] = data else {
        return;
    };
    let mut state = DesiredState::default();
    match sel % 3 {
        0 => {
            let Ok(g) = serde_json::from_slice::<VnetGatewaySpec>(body) else {
                return;
            };
            state.gateway = Some(g);
        }
        1 => {
            let Ok(lg) = serde_json::from_slice::<LocalGatewaySpec>(body) else {
                return;
            };
            state.local_gateways.insert(lg.name.clone(), lg);
        }
        _ => {
            let Ok(c) = serde_json::from_slice::<ConnectionSpec>(body) else {
                return;
            };
            state.connections.insert(c.name.clone(), c);
        }
    }
    state.normalise();
    let _ = validate_state(&state);
    let _ = state.to_document(false);
});
