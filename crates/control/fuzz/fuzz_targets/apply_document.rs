//! The `vgw apply -f FILE` document: YAML (or JSON, which YAML reads too) parsed as the CLI does,
//! then the desired-state document the API's POST /api/desiredState takes, built into a state and
//! validated. Kept to one call per step so it follows the parsing functions if they move.
//! Nothing may panic, however deep, aliased or malformed the document.
//!
//! Short run: cd crates/control/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run apply_document --sanitizer none
#![no_main]

use libfuzzer_sys::fuzz_target;
use vgw_control::state::{DesiredState, StateDocument};
use vgw_control::validate::validate_state;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // What the CLI does with the file (crates/vgw/src/commands/state.rs).
    let Ok(value) = serde_yaml::from_str::<serde_json::Value>(text) else {
        return;
    };
    // What the server does with the body.
    let Ok(body) = serde_json::to_vec(&value) else {
        return;
    };
    let Ok(doc) = serde_json::from_slice::<StateDocument>(&body) else {
        return;
    };
    if let Ok(state) = DesiredState::from_document(doc)
        && validate_state(&state).is_ok()
    {
        // A valid state exports to a document that reads back as the same state.
        let again: StateDocument =
            serde_json::from_value(state.to_document(true)).expect("exported document must parse");
        let again = DesiredState::from_document(again).expect("exported document must build");
        assert_eq!(again, state, "export/apply round trip changed the state");
    }
});
