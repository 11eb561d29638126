//! Interface inventory over rtnetlink (RTM_GETLINK dump) for the calling thread's netns.
//!
//! Hand-rolled because only four attributes are needed; the whole exchange is one dump request.

use std::{io, net::IpAddr};

use anyhow::{Context as _, Result, bail};

#[cfg(test)]
use crate::netlink::align4;
use crate::{
    model::topology::Link,
    netlink::{NLMSG_HDRLEN, NetlinkSocket, attributes, messages},
};

// rtnetlink numbers, from libc.
use libc::{
    IFA_ADDRESS, IFA_LOCAL, IFLA_IFNAME, IFLA_INFO_DATA, IFLA_INFO_KIND, IFLA_LINK, IFLA_LINKINFO,
    IFLA_MASTER, RTM_GETADDR, RTM_GETLINK, RTM_NEWADDR, RTM_NEWLINK,
};
/// IFLA_VXLAN_ID, IFLA_VXLAN_PROXY and IFLA_VXLAN_PORT in a VXLAN device's IFLA_INFO_DATA
/// (linux/if_link.h).
const IFLA_VXLAN_ID: u16 = 1;
const IFLA_VXLAN_PROXY: u16 = 11;
const IFLA_VXLAN_PORT: u16 = 15;
/// sizeof(struct ifaddrmsg), which libc does not define.
const IFADDRMSG_LEN: usize = 8;
const IFINFOMSG_LEN: usize = size_of::<libc::ifinfomsg>();
const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;
const NLMSG_DONE: u16 = libc::NLMSG_DONE as u16;
const NLM_F_REQUEST: u16 = libc::NLM_F_REQUEST as u16;
const NLM_F_DUMP: u16 = libc::NLM_F_DUMP as u16;

/// Lists the interfaces of the current thread's network namespace.
pub fn list_links() -> Result<Vec<Link>> {
    dump(RTM_GETLINK, RTM_NEWLINK, &[0u8; IFINFOMSG_LEN], parse_link)
}

/// Lists the IP addresses of the current thread's network namespace, with their ifindex.
pub fn list_addresses() -> Result<Vec<(u32, IpAddr)>> {
    dump(
        RTM_GETADDR,
        RTM_NEWADDR,
        &[0u8; IFADDRMSG_LEN],
        parse_address,
    )
}

/// One netlink dump request, its answers parsed by `parse`.
fn dump<T>(
    request: u16,
    answer: u16,
    family_header: &[u8],
    parse: fn(&[u8]) -> Option<T>,
) -> Result<Vec<T>> {
    let sock = NetlinkSocket::open(libc::NETLINK_ROUTE).context("opening an rtnetlink socket")?;
    let mut message = vec![0u8; NLMSG_HDRLEN];
    message.extend_from_slice(family_header);
    let len = message.len() as u32;
    message[0..4].copy_from_slice(&len.to_ne_bytes());
    message[4..6].copy_from_slice(&request.to_ne_bytes());
    message[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    message[8..12].copy_from_slice(&1u32.to_ne_bytes());
    sock.send(&message)
        .with_context(|| format!("sending rtnetlink request {request}"))?;

    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = sock.recv(&mut buf).context("reading an rtnetlink dump")?;
        for (msg_type, payload) in messages(&buf[..n]) {
            match msg_type {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let errno = payload
                        .get(..4)
                        .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap()));
                    bail!(
                        "rtnetlink request {request} failed: {}",
                        io::Error::from_raw_os_error(-errno)
                    );
                }
                t if t == answer => out.extend(parse(payload)),
                _ => {}
            }
        }
    }
}

fn parse_address(payload: &[u8]) -> Option<(u32, IpAddr)> {
    let header = payload.get(..IFADDRMSG_LEN)?;
    let family = header[0];
    let index = u32::from_ne_bytes(header[4..8].try_into().ok()?);
    // IFA_LOCAL is the interface's own address on point-to-point links; IFA_ADDRESS otherwise.
    let mut address = None;
    for (attr_type, value) in attributes(&payload[IFADDRMSG_LEN..]) {
        let parsed = match (family as i32, value.len()) {
            (libc::AF_INET, 4) => Some(IpAddr::from(<[u8; 4]>::try_from(value).ok()?)),
            (libc::AF_INET6, 16) => Some(IpAddr::from(<[u8; 16]>::try_from(value).ok()?)),
            _ => None,
        };
        match attr_type {
            IFA_LOCAL => address = parsed.or(address),
            IFA_ADDRESS if address.is_none() => address = parsed,
            _ => {}
        }
    }
    Some((index, address?))
}

fn parse_link(payload: &[u8]) -> Option<Link> {
    let header = payload.get(..IFINFOMSG_LEN)?;
    let mut link = Link {
        index: i32::from_ne_bytes(header[4..8].try_into().ok()?) as u32,
        ..Link::default()
    };
    // The kind's own attributes; read once the kind is known (it may come after them).
    let mut data = None;
    for (attr_type, value) in attributes(&payload[IFINFOMSG_LEN..]) {
        match attr_type {
            IFLA_IFNAME => link.name = c_string(value),
            IFLA_LINK => link.peer_index = read_u32(value),
            IFLA_MASTER => link.master = read_u32(value),
            IFLA_LINKINFO => {
                for (info, v) in attributes(value) {
                    match info {
                        IFLA_INFO_KIND => link.kind = Some(c_string(v)),
                        IFLA_INFO_DATA => data = Some(v),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if link.kind.as_deref() == Some("vxlan")
        && let Some(data) = data
    {
        for (attr, v) in attributes(data) {
            match attr {
                IFLA_VXLAN_ID => link.vni = read_u32(v),
                IFLA_VXLAN_PROXY => link.arp_proxy = v.first().is_some_and(|b| *b != 0),
                // Network byte order, as on the wire.
                IFLA_VXLAN_PORT => {
                    link.vxlan_port = v.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]))
                }
                _ => {}
            }
        }
    }
    Some(link)
}

fn read_u32(value: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(value.get(..4)?.try_into().ok()?))
}

fn c_string(value: &[u8]) -> String {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(attr_type: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&attr_type.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(align4(out.len()), 0);
        out
    }

    #[test]
    fn parses_a_veth_bridge_port() {
        let mut payload = vec![0u8; IFINFOMSG_LEN];
        payload[4..8].copy_from_slice(&7i32.to_ne_bytes());
        payload.extend(attr(IFLA_IFNAME, b"veth1a2b\0"));
        payload.extend(attr(IFLA_LINK, &42u32.to_ne_bytes()));
        payload.extend(attr(IFLA_MASTER, &3u32.to_ne_bytes()));
        payload.extend(attr(IFLA_LINKINFO, &attr(IFLA_INFO_KIND, b"veth\0")));
        let link = parse_link(&payload).unwrap();
        assert_eq!(
            link,
            Link {
                index: 7,
                name: "veth1a2b".into(),
                peer_index: Some(42),
                master: Some(3),
                kind: Some("veth".into()),
                vni: None,
                arp_proxy: false,
                vxlan_port: None,
            }
        );
    }

    #[test]
    fn reads_a_vxlan_devices_vni() {
        let mut payload = vec![0u8; IFINFOMSG_LEN];
        payload[4..8].copy_from_slice(&9i32.to_ne_bytes());
        payload.extend(attr(IFLA_IFNAME, b"vxlan0\0"));
        // The data before the kind, as nothing in the format forbids.
        let mut data = attr(IFLA_VXLAN_ID, &4097u32.to_ne_bytes());
        data.extend(attr(IFLA_VXLAN_PROXY, &[1]));
        data.extend(attr(IFLA_VXLAN_PORT, &4789u16.to_be_bytes()));
        let mut info = attr(IFLA_INFO_DATA, &data);
        info.extend(attr(IFLA_INFO_KIND, b"vxlan\0"));
        payload.extend(attr(IFLA_LINKINFO, &info));
        let link = parse_link(&payload).unwrap();
        assert_eq!(
            (
                link.kind.as_deref(),
                link.vni,
                link.arp_proxy,
                link.vxlan_port
            ),
            (Some("vxlan"), Some(4097), true, Some(4789))
        );
    }

    #[test]
    fn lists_loopback_of_this_namespace() {
        let links = list_links().unwrap();
        assert!(
            links.iter().any(|l| l.name == "lo" && l.index == 1),
            "{links:?}"
        );
        let addresses = list_addresses().unwrap();
        assert!(
            addresses.contains(&(1, "127.0.0.1".parse().unwrap())),
            "{addresses:?}"
        );
    }
}
