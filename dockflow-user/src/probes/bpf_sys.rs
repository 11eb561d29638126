//! The two bpf(2) commands aya 0.14 cannot issue for netfilter programs: BPF_PROG_LOAD with
//! BPF_PROG_TYPE_NETFILTER, and BPF_LINK_CREATE with the netfilter attach options.

use std::{
    ffi::CString,
    io,
    os::fd::{FromRawFd as _, OwnedFd},
};

use aya_obj::generated::bpf_insn;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_NETFILTER: u32 = 32;
const BPF_NETFILTER: u32 = 45;

/// The BPF_PROG_LOAD part of union bpf_attr, up to expected_attach_type.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The BPF_LINK_CREATE part of union bpf_attr with its netfilter member.
#[repr(C)]
#[derive(Default)]
struct NetfilterLinkAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    pf: u32,
    hooknum: u32,
    priority: i32,
    netfilter_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Loads `insns` as a netfilter program; on refusal the error carries the verifier's last words.
pub fn load_netfilter_program(
    name: &str,
    insns: &[bpf_insn],
    license: &CString,
) -> io::Result<OwnedFd> {
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_NETFILTER,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type: BPF_NETFILTER,
        ..Default::default()
    };
    let len = name.len().min(15);
    attr.prog_name[..len].copy_from_slice(&name.as_bytes()[..len]);
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            // Retry with the verifier log so the error says why.
            let mut log = vec![0u8; 1 << 20];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            bpf(BPF_PROG_LOAD, &mut attr).map_err(|retry| {
                // A full log means the verifier went on and on: the program is too complex
                // for it, and the log's last line is some state, not the reason.
                let log_full = log.iter().rposition(|b| *b != 0).unwrap_or(0) + 2 >= log.len();
                if retry.raw_os_error() == Some(libc::ENOSPC) || log_full {
                    return io::Error::new(
                        first.kind(),
                        format!("{first}: the verifier gave up on it (too many states to check)"),
                    );
                }
                let text = String::from_utf8_lossy(&log);
                let last = text
                    .trim_end_matches('\0')
                    .lines()
                    .rev()
                    // The last lines are statistics; the reason comes before them.
                    .find(|l| {
                        let l = l.trim();
                        !l.is_empty()
                            && !l.starts_with("processed ")
                            && !l.starts_with("verification time")
                            && !l.starts_with("stack depth")
                    })
                    .unwrap_or("")
                    .to_string();
                io::Error::new(
                    first.kind(),
                    if last.is_empty() {
                        first.to_string()
                    } else {
                        format!("{first}: verifier: {last}")
                    },
                )
            })
        }
    }
}

/// Attaches a netfilter program to (family, hook, priority); the link lives as long as the fd.
pub fn attach_netfilter(prog: &OwnedFd, pf: u8, hook: u8, priority: i32) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd as _;
    let mut attr = NetfilterLinkAttr {
        prog_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_NETFILTER,
        pf: pf.into(),
        hooknum: hook.into(),
        priority,
        ..Default::default()
    };
    bpf(BPF_LINK_CREATE, &mut attr)
}
