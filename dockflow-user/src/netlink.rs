//! The bits of netlink dockflow speaks by hand: a socket, and iterators over messages and
//! attributes. rtnetlink (interfaces, addresses) and nfnetlink (nftables traces) use them.

use std::{io, mem};

pub const NLMSG_HDRLEN: usize = 16;

/// Splits a netlink datagram into (type, payload) pairs.
pub fn messages(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        let msg_type = u16::from_ne_bytes(buf[4..6].try_into().unwrap());
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let payload = &buf[NLMSG_HDRLEN..len];
        buf = &buf[align4(len).min(buf.len())..];
        Some((msg_type, payload))
    })
}

/// Iterates (type, value) pairs of rtattrs.
pub fn attributes(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes(buf[0..2].try_into().unwrap()) as usize;
        let attr_type = u16::from_ne_bytes(buf[2..4].try_into().unwrap()) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        let value = &buf[4..len];
        buf = &buf[align4(len).min(buf.len())..];
        Some((attr_type, value))
    })
}

pub fn align4(len: usize) -> usize {
    (len + 3) & !3
}

pub struct NetlinkSocket(std::os::fd::OwnedFd);

impl NetlinkSocket {
    pub fn open(protocol: i32) -> io::Result<Self> {
        use std::os::fd::FromRawFd as _;
        // SAFETY: socket takes plain integers and touches no memory.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the fd was just returned by the kernel, checked non-negative, and nothing else owns it.
        Ok(Self(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: a plain C struct of integers, for which all zeroes is a valid value.
        let mut kernel: libc::sockaddr_nl = unsafe { mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: the message and the address are live buffers of the lengths passed, and the fd is open (owned by self).
        let sent = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&raw const kernel).cast(),
                mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: `buf` is valid and writable for `buf.len()` bytes, and the fd is open (owned by self).
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl NetlinkSocket {
    /// Joins a multicast group (e.g. NFNLGRP_NFTRACE). The socket is bound first: an unbound
    /// socket is not on the kernel's multicast lists and receives nothing.
    pub fn join_group(&self, group: u32) -> io::Result<()> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: a plain C struct of integers, for which all zeroes is a valid value.
        let mut local: libc::sockaddr_nl = unsafe { mem::zeroed() };
        local.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: `local` is a live sockaddr_nl of the size passed, and the fd is open (owned by self).
        let bound = unsafe {
            libc::bind(
                self.0.as_raw_fd(),
                (&raw const local).cast(),
                mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if bound < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the option value points to a live local of the size passed, and the fd is open (owned by self).
        let rc = unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                libc::SOL_NETLINK,
                libc::NETLINK_ADD_MEMBERSHIP,
                (&raw const group).cast(),
                mem::size_of::<u32>() as u32,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl std::os::fd::AsRawFd for NetlinkSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}
