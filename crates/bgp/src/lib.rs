//! Sans-IO BGP-4 speaker (RFC 4271): session FSM, RIB and policy. Filled by the BGP issue.
