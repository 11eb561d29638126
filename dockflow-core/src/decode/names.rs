//! Names for the kernel's numbers (uapi values, stable across kernels).

use dockflow_common::{NFPROTO_IPV4, NFPROTO_IPV6};

use crate::model::{CtDirection, CtState, Family};

pub fn family(pf: u8) -> Family {
    match pf {
        NFPROTO_IPV4 => Family::Ipv4,
        NFPROTO_IPV6 => Family::Ipv6,
        7 => Family::Bridge,
        _ => Family::Unknown,
    }
}

/// enum ip_conntrack_info: (state, direction).
pub fn ct_info(info: u8) -> (CtState, CtDirection) {
    use CtDirection::*;
    match info {
        0 => (CtState::Established, Original),
        1 => (CtState::Related, Original),
        2 => (CtState::New, Original),
        3 => (CtState::Established, Reply),
        4 => (CtState::Related, Reply),
        7 => (CtState::Untracked, Original),
        _ => (CtState::Unknown, Original),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_conntrack_state_and_direction() {
        assert_eq!(ct_info(2), (CtState::New, CtDirection::Original));
        assert_eq!(ct_info(3), (CtState::Established, CtDirection::Reply));
    }
}
