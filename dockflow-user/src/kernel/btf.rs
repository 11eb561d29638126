//! Kernel type information from BTF: struct member offsets for the programs (Rust eBPF has no
//! CO-RE) and enum value names (drop reasons) for decoding.
//!
//! A reader of its own, of the few BTF kinds dockflow follows: aya-obj parses BTF but keeps its
//! type accessors crate-private and does not read the split BTF of modules (nf_conntrack is a
//! module on most distributions), and btf-rs is LGPL. The format is the kernel's uapi
//! (include/uapi/linux/btf.h, Documentation/bpf/btf.rst).

use std::{collections::HashMap, path::Path};

use anyhow::{Context as _, Result, bail};

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";
const MODULES_DIR: &str = "/sys/kernel/btf";

const BTF_MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const TYPE_LEN: usize = 12;

// BTF_KIND_* values that dockflow looks at or must step over.
const KIND_PTR: u8 = 2;
const KIND_STRUCT: u8 = 4;
const KIND_UNION: u8 = 5;
const KIND_ENUM: u8 = 6;
const KIND_TYPEDEF: u8 = 8;
const KIND_VOLATILE: u8 = 9;
const KIND_CONST: u8 = 10;
const KIND_RESTRICT: u8 = 11;
const KIND_FUNC_PROTO: u8 = 13;
const KIND_TYPE_TAG: u8 = 18;
const KIND_ENUM64: u8 = 19;

/// The kernel's BTF: vmlinux plus the split BTF of the modules dockflow reads structs from.
pub struct KernelBtf {
    base: Object,
    modules: Vec<Object>,
}

/// One BTF blob: vmlinux, or a module's split BTF whose type ids and string offsets continue
/// those of vmlinux.
struct Object {
    data: Vec<u8>,
    /// Byte offset of each type record in `data`; the first is type id `first_id`.
    types: Vec<usize>,
    first_id: u32,
    strings: std::ops::Range<usize>,
    /// String offsets below this are vmlinux's (split BTF only; 0 for vmlinux itself).
    strings_base: u32,
}

/// One type record, undecoded past its common header.
#[derive(Clone, Copy)]
struct Type<'a> {
    name_off: u32,
    kind: u8,
    kind_flag: bool,
    vlen: usize,
    /// The size of a struct, union or enum; the referenced type of a typedef or qualifier.
    size_or_type: u32,
    /// The kind-specific records after the header (members, enum values, ...).
    body: &'a [u8],
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

impl Object {
    fn parse(data: Vec<u8>, base: Option<&Object>) -> Result<Self> {
        let magic = data.get(..2).map(|m| u16::from_ne_bytes([m[0], m[1]]));
        if magic != Some(BTF_MAGIC) || data.len() < HEADER_LEN {
            bail!("not BTF (bad magic or header)");
        }
        let field = |at| u32_at(&data, at).map(|v| v as usize).unwrap_or(0);
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (field(4), field(8), field(12), field(16), field(20));
        let types_at = hdr_len + type_off;
        let strings = hdr_len + str_off..hdr_len + str_off + str_len;
        if types_at + type_len > data.len() || strings.end > data.len() {
            bail!("BTF sections run past the end of the data");
        }
        let mut types = Vec::new();
        let mut at = types_at;
        while at < types_at + type_len {
            types.push(at);
            at += record_len(&data, at).context("a truncated or unknown BTF type record")?;
        }
        let (first_id, strings_base) = match base {
            // Type id 0 is void, which has no record.
            None => (1, 0),
            Some(base) => (
                base.first_id + base.types.len() as u32,
                base.strings.len() as u32,
            ),
        };
        Ok(Self {
            data,
            types,
            first_id,
            strings,
            strings_base,
        })
    }

    fn type_at(&self, at: usize) -> Option<Type<'_>> {
        let info = u32_at(&self.data, at + 4)?;
        let len = record_len(&self.data, at)?;
        Some(Type {
            name_off: u32_at(&self.data, at)?,
            kind: ((info >> 24) & 0x1f) as u8,
            kind_flag: info >> 31 == 1,
            vlen: (info & 0xffff) as usize,
            size_or_type: u32_at(&self.data, at + 8)?,
            body: self.data.get(at + TYPE_LEN..at + len)?,
        })
    }
}

/// Bytes of the type record at `at`: the common header and its kind's trailing records.
fn record_len(data: &[u8], at: usize) -> Option<usize> {
    let info = u32_at(data, at + 4)?;
    let vlen = (info & 0xffff) as usize;
    let trailing = match ((info >> 24) & 0x1f) as u8 {
        // int: one u32 of encoding; var and decl_tag: one u32.
        1 | 14 | 17 => 4,
        // ptr, fwd, typedef, volatile, const, restrict, func, float, type_tag.
        2 | 7..=12 | 16 | 18 => 0,
        // array: type, index type, count.
        3 => 12,
        // struct/union members, datasec entries, enum64 values: three u32 each.
        KIND_STRUCT | KIND_UNION | 15 | KIND_ENUM64 => 12 * vlen,
        // enum values and function parameters: two u32 each.
        KIND_ENUM | 13 => 8 * vlen,
        _ => return None,
    };
    (at + TYPE_LEN + trailing <= data.len()).then_some(TYPE_LEN + trailing)
}

/// One object as seen with vmlinux underneath: type ids and string offsets resolve across both.
#[derive(Clone, Copy)]
struct View<'a> {
    base: &'a Object,
    own: &'a Object,
}

impl<'a> View<'a> {
    fn ty(&self, id: u32) -> Option<Type<'a>> {
        let object = if id >= self.own.first_id {
            self.own
        } else {
            self.base
        };
        let index = id.checked_sub(object.first_id)? as usize;
        object.type_at(*object.types.get(index)?)
    }

    fn name(&self, offset: u32) -> &'a str {
        let (object, offset) = match offset.checked_sub(self.own.strings_base) {
            Some(own) if self.own.strings_base > 0 => (self.own, own),
            _ => (self.base, offset),
        };
        let strings = &object.data[object.strings.clone()];
        let rest = strings.get(offset as usize..).unwrap_or_default();
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or_default()
    }

    /// The types this object defines itself (not vmlinux's, for a module).
    fn own_types(&self) -> impl Iterator<Item = Type<'a>> + 'a {
        let own = self.own;
        own.types.iter().filter_map(move |at| own.type_at(*at))
    }

    /// The type `id` names, through typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<Type<'a>> {
        for _ in 0..16 {
            let ty = self.ty(id)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_type
                }
                _ => return Some(ty),
            }
        }
        None
    }

    /// The struct or union `id` names, through typedefs and qualifiers.
    fn aggregate(&self, id: u32) -> Option<Type<'a>> {
        self.resolve(id)
            .filter(|t| matches!(t.kind, KIND_STRUCT | KIND_UNION))
    }

    /// Finds `field` among the members of `aggregate`, descending into anonymous members as
    /// C member access does. Returns its bit offset and, when it is itself a struct or union,
    /// that type for further descent.
    fn member(&self, aggregate: Type<'a>, field: &str) -> Option<(u32, Option<Type<'a>>)> {
        for member in aggregate.body.chunks_exact(12).take(aggregate.vlen) {
            let name = self.name(u32_at(member, 0)?);
            let inner = self.aggregate(u32_at(member, 4)?);
            let raw_offset = u32_at(member, 8)?;
            // With kind_flag set, the top 8 bits are a bitfield's size.
            let bits = if aggregate.kind_flag {
                raw_offset & 0x00ff_ffff
            } else {
                raw_offset
            };
            if name == field {
                return Some((bits, inner));
            }
            if name.is_empty()
                && let Some((deeper, ty)) = inner.and_then(|t| self.member(t, field))
            {
                return Some((bits + deeper, ty));
            }
        }
        None
    }
}

impl KernelBtf {
    /// Loads vmlinux BTF and the BTF of `modules` that are loaded (nf_conntrack is a module on
    /// most distributions; built in here and there).
    pub fn load(modules: &[&str]) -> Result<Self> {
        if !Path::new(VMLINUX).exists() {
            bail!(
                "this kernel has no BTF ({VMLINUX} is missing); dockflow needs CONFIG_DEBUG_INFO_BTF=y"
            );
        }
        let read = |path: &Path| {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        };
        let base = Object::parse(read(Path::new(VMLINUX))?, None)
            .with_context(|| format!("parsing {VMLINUX}"))?;
        let mut loaded = Vec::new();
        for module in modules {
            let path = Path::new(MODULES_DIR).join(module);
            if path.exists() {
                loaded.push(
                    Object::parse(read(&path)?, Some(&base))
                        .with_context(|| format!("parsing {}", path.display()))?,
                );
            }
        }
        Ok(Self {
            base,
            modules: loaded,
        })
    }

    /// vmlinux first, then each module over it.
    fn views(&self) -> impl Iterator<Item = View<'_>> {
        std::iter::once(&self.base)
            .chain(&self.modules)
            .map(|own| View {
                base: &self.base,
                own,
            })
    }

    fn find_struct(&self, name: &str) -> Option<(View<'_>, Type<'_>)> {
        self.views().find_map(|view| {
            view.own_types()
                .find(|t| t.kind == KIND_STRUCT && t.vlen > 0 && view.name(t.name_off) == name)
                .map(|t| (view, t))
        })
    }

    /// sizeof(struct name).
    pub fn size(&self, name: &str) -> Result<u32> {
        let (_, s) = self
            .find_struct(name)
            .with_context(|| format!("struct {name} not in the kernel's BTF"))?;
        Ok(s.size_or_type)
    }

    /// Whether `struct name` is described anywhere (a module that is not loaded is not).
    pub fn has_struct(&self, name: &str) -> bool {
        self.find_struct(name).is_some()
    }

    /// Byte offset of `path` ("a.b.c") inside `struct name`, looking through anonymous
    /// structs and unions the way C member access does.
    pub fn offset(&self, name: &str, path: &str) -> Result<u32> {
        let (view, strukt) = self
            .find_struct(name)
            .with_context(|| format!("struct {name} not in the kernel's BTF"))?;
        let mut current = Some(strukt);
        let mut bits = 0u32;
        for field in path.split('.') {
            let Some(aggregate) = current else {
                bail!("{name}.{path}: a member before {field} is not a struct");
            };
            let (offset, next) = view
                .member(aggregate, field)
                .with_context(|| format!("struct {name} has no member {path}"))?;
            bits += offset;
            current = next;
        }
        if !bits.is_multiple_of(8) {
            bail!("{name}.{path} is a bitfield");
        }
        Ok(bits / 8)
    }

    /// Whether tracepoint `name` passes its programs an argument of type `enum enum_name`, as
    /// its BTF prototype (`btf_trace_<name>`, what tp_btf programs are checked against) says.
    /// skb:kfree_skb has its drop reason since 5.17.
    pub fn tracepoint_has_enum_argument(&self, name: &str, enum_name: &str) -> Result<bool> {
        let typedef = format!("btf_trace_{name}");
        let (view, proto) = self
            .views()
            .find_map(|view| {
                let t = view
                    .own_types()
                    .find(|t| t.kind == KIND_TYPEDEF && view.name(t.name_off) == typedef)?;
                let pointer = view
                    .resolve(t.size_or_type)
                    .filter(|p| p.kind == KIND_PTR)?;
                let proto = view
                    .resolve(pointer.size_or_type)
                    .filter(|p| p.kind == KIND_FUNC_PROTO)?;
                Some((view, proto))
            })
            .with_context(|| format!("tracepoint {name} has no prototype in the kernel's BTF"))?;
        Ok(proto.body.chunks_exact(8).take(proto.vlen).any(|param| {
            u32_at(param, 4)
                .and_then(|id| view.resolve(id))
                .is_some_and(|t| {
                    matches!(t.kind, KIND_ENUM | KIND_ENUM64) && view.name(t.name_off) == enum_name
                })
        }))
    }

    /// Name of every value of `enum name` (e.g. skb_drop_reason).
    pub fn enum_names(&self, name: &str) -> Result<HashMap<u32, String>> {
        for view in self.views() {
            let found = view.own_types().find(|t| {
                matches!(t.kind, KIND_ENUM | KIND_ENUM64) && view.name(t.name_off) == name
            });
            if let Some(e) = found {
                let width = if e.kind == KIND_ENUM { 8 } else { 12 };
                return Ok(e
                    .body
                    .chunks_exact(width)
                    .take(e.vlen)
                    .filter_map(|v| Some((u32_at(v, 4)?, view.name(u32_at(v, 0)?).to_string())))
                    .collect());
            }
        }
        bail!("enum {name} not in the kernel's BTF")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The running kernel's BTF is the fixture: these are facts any BTF kernel agrees on.
    #[test]
    fn resolves_sk_buff_members_through_anonymous_unions() {
        let btf = KernelBtf::load(&[]).unwrap();
        let head = btf.offset("sk_buff", "head").unwrap();
        let dev = btf.offset("sk_buff", "dev").unwrap();
        assert!(
            head > dev,
            "head ({head}) comes after dev ({dev}) in every layout"
        );
        assert_eq!(btf.offset("nf_hook_state", "hook").unwrap(), 0);
        assert_eq!(btf.offset("nf_hook_state", "pf").unwrap(), 1);
        assert_eq!(btf.offset("net", "ns.inum").unwrap() % 4, 0);
        assert!(btf.offset("sk_buff", "no_such_member").is_err());
        assert!(btf.size("sk_buff").unwrap() > 150);
    }

    #[test]
    fn names_drop_reasons() {
        let btf = KernelBtf::load(&[]).unwrap();
        let names = btf.enum_names("skb_drop_reason").unwrap();
        assert!(
            names
                .values()
                .any(|n| n == "SKB_DROP_REASON_NETFILTER_DROP"),
            "{names:?}"
        );
    }

    /// Split BTF: a module's types and strings continue vmlinux's numbering.
    #[test]
    fn reads_a_module_struct_over_vmlinux() {
        let btf = KernelBtf::load(&["nf_conntrack"]).unwrap();
        if !btf.has_struct("nf_conn") {
            // nf_conntrack is built in or not loaded here: nothing split to read.
            return;
        }
        let status = btf.offset("nf_conn", "status").unwrap();
        let tuplehash = btf.offset("nf_conn", "tuplehash").unwrap();
        assert!(status > tuplehash, "status {status}, tuplehash {tuplehash}");
        assert_eq!(btf.offset("nf_conntrack_tuple", "src.u3").unwrap(), 0);
    }

    #[test]
    fn reads_tracepoint_prototypes() {
        let btf = KernelBtf::load(&[]).unwrap();
        // Every kernel dockflow runs on (5.17+ for the reason; 6.1 in vmtest) has it.
        assert!(
            btf.tracepoint_has_enum_argument("kfree_skb", "skb_drop_reason")
                .unwrap()
        );
        assert!(
            !btf.tracepoint_has_enum_argument("netif_receive_skb", "skb_drop_reason")
                .unwrap()
        );
        assert!(
            btf.tracepoint_has_enum_argument("no_such_tracepoint", "x")
                .is_err()
        );
    }

    #[test]
    fn refuses_what_is_not_btf() {
        assert!(Object::parse(vec![0; 40], None).is_err());
        let mut truncated = std::fs::read(VMLINUX).unwrap();
        truncated.truncate(1000);
        assert!(Object::parse(truncated, None).is_err());
    }
}
