//! Device access rules: checking them, writing them for the v1 `devices` controller,
//! and compiling them to a `BPF_PROG_TYPE_CGROUP_DEVICE` program for cgroup v2.
//!
//! Semantics: access starts denied for every device, then the rules apply in order and
//! a later rule overrides an earlier one. On v1 this is done by writing `a` to
//! `devices.deny` and then each rule, as runc does. The BPF program decides each
//! requested access bit (`m`, `r`, `w`) on its own: the last rule that matches the
//! device and names that bit decides it, no match denies it, and the access is granted
//! only if every requested bit is. (Where v1 cannot punch a narrow deny into a wider
//! allow, the program can; v2 is then the stricter of the two.)

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::error::{invalid, CgroupError, Result};

/// `BPF_DEVCG_ACC_MKNOD`: the access bits of `bpf_cgroup_dev_ctx.access_type >> 16`.
pub const ACC_MKNOD: u32 = 1;
/// `BPF_DEVCG_ACC_READ`.
pub const ACC_READ: u32 = 2;
/// `BPF_DEVCG_ACC_WRITE`.
pub const ACC_WRITE: u32 = 4;
/// `BPF_DEVCG_DEV_BLOCK`: the device type in the low 16 bits of `access_type`.
pub const DEV_BLOCK: u32 = 1;
/// `BPF_DEVCG_DEV_CHAR`.
pub const DEV_CHAR: u32 = 2;

/// Which devices a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// Every type (`a`).
    All,
    /// Block devices (`b`).
    Block,
    /// Character devices (`c`, and `u`, which is a character device too).
    Char,
}

/// A device rule, checked and in the form both back ends use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    /// Allow (`true`) or deny.
    pub allow: bool,
    /// Device type.
    pub kind: DeviceKind,
    /// Major number; `None` matches any.
    pub major: Option<u32>,
    /// Minor number; `None` matches any.
    pub minor: Option<u32>,
    /// Bits of [`ACC_MKNOD`], [`ACC_READ`], [`ACC_WRITE`].
    pub access: u32,
}

impl DeviceRule {
    /// The rule in the `devices.allow` syntax: `c 1:3 rwm`, `a *:* rwm`.
    pub fn v1_line(&self) -> String {
        let kind = match self.kind {
            DeviceKind::All => 'a',
            DeviceKind::Block => 'b',
            DeviceKind::Char => 'c',
        };
        let number = |n: Option<u32>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        let mut access = String::new();
        for (bit, letter) in [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')] {
            if self.access & bit != 0 {
                access.push(letter);
            }
        }
        format!(
            "{kind} {}:{} {access}",
            number(self.major),
            number(self.minor)
        )
    }

    /// Whether this rule is about the device `kind major:minor` (any access).
    fn matches_device(&self, kind: u32, major: u32, minor: u32) -> bool {
        let kind_ok = match self.kind {
            DeviceKind::All => true,
            DeviceKind::Block => kind == DEV_BLOCK,
            DeviceKind::Char => kind == DEV_CHAR,
        };
        kind_ok
            && self.major.filter(|m| *m != major).is_none()
            && self.minor.filter(|m| *m != minor).is_none()
    }
}

/// Checks a device number: absent or `-1` is the wildcard; it must fit an immediate.
fn device_number(field: String, value: Option<i64>) -> Result<Option<u32>> {
    match value {
        None | Some(-1) => Ok(None),
        Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => {
            Ok(Some(u32::try_from(n).unwrap_or(u32::MAX)))
        }
        Some(n) => Err(invalid(
            field,
            format!("{n} is not a device number (use -1 or omit it for any)"),
        )),
    }
}

/// Checks the spec's rules and converts them.
pub fn parse_rules(rules: &[LinuxDeviceCgroup]) -> Result<Vec<DeviceRule>> {
    rules
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            let field = |name: &str| format!("devices[{index}].{name}");
            let kind = match rule.typ() {
                None | Some(LinuxDeviceType::A) => DeviceKind::All,
                Some(LinuxDeviceType::B) => DeviceKind::Block,
                Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => DeviceKind::Char,
                Some(LinuxDeviceType::P) => {
                    return Err(invalid(
                        field("type"),
                        "fifo (p) devices cannot be controlled by the devices cgroup",
                    ))
                }
            };
            let access_text = rule.access().as_deref().unwrap_or("");
            let mut access = 0;
            for letter in access_text.chars() {
                access |= match letter {
                    'r' => ACC_READ,
                    'w' => ACC_WRITE,
                    'm' => ACC_MKNOD,
                    other => {
                        return Err(invalid(
                            field("access"),
                            format!("{other:?} in {access_text:?} is not one of r, w, m"),
                        ))
                    }
                };
            }
            if access_text.is_empty() {
                access = ACC_READ | ACC_WRITE | ACC_MKNOD;
            }
            Ok(DeviceRule {
                allow: rule.allow(),
                kind,
                major: device_number(field("major"), rule.major())?,
                minor: device_number(field("minor"), rule.minor())?,
                access,
            })
        })
        .collect()
}

/// The writes that program the v1 `devices` controller: deny everything, then each
/// rule in order. Each pair is (file, value).
pub fn v1_writes(rules: &[DeviceRule]) -> Vec<(&'static str, String)> {
    let mut writes = vec![("devices.deny", "a".to_string())];
    for rule in rules {
        let file = if rule.allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        writes.push((file, rule.v1_line()));
    }
    writes
}

/// What the rules decide for one access, by the semantics in the module documentation.
/// `kind` is [`DEV_BLOCK`] or [`DEV_CHAR`], `access` a set of `ACC_*` bits.
pub fn decide(rules: &[DeviceRule], kind: u32, major: u32, minor: u32, access: u32) -> bool {
    [ACC_MKNOD, ACC_READ, ACC_WRITE]
        .into_iter()
        .filter(|bit| access & bit != 0)
        .all(|bit| {
            rules
                .iter()
                .rev()
                .find(|r| r.access & bit != 0 && r.matches_device(kind, major, minor))
                .is_some_and(|r| r.allow)
        })
}

/// The device rules runc adds to every container: `mknod` of any device, the
/// standard character devices, pseudo-terminals and `/dev/net/tun`. A runtime
/// appends the spec's own rules after these.
pub fn default_allowed_devices() -> Vec<LinuxDeviceCgroup> {
    let rule = |kind, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut rule = LinuxDeviceCgroup::default();
        rule.set_allow(true);
        rule.set_typ(Some(kind));
        rule.set_major(major);
        rule.set_minor(minor);
        rule.set_access(Some(access.to_string()));
        rule
    };
    let c = LinuxDeviceType::C;
    vec![
        rule(c, None, None, "m"),
        rule(LinuxDeviceType::B, None, None, "m"),
        rule(c, Some(1), Some(3), "rwm"),    // /dev/null
        rule(c, Some(1), Some(5), "rwm"),    // /dev/zero
        rule(c, Some(1), Some(7), "rwm"),    // /dev/full
        rule(c, Some(1), Some(8), "rwm"),    // /dev/random
        rule(c, Some(1), Some(9), "rwm"),    // /dev/urandom
        rule(c, Some(5), Some(0), "rwm"),    // /dev/tty
        rule(c, Some(5), Some(2), "rwm"),    // /dev/ptmx
        rule(c, Some(136), None, "rwm"),     // /dev/pts/*
        rule(c, Some(10), Some(200), "rwm"), // /dev/net/tun
    ]
}

// ---------------------------------------------------------------------------------
// eBPF encoding.

/// One eBPF instruction, laid out as the kernel's `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    /// Opcode.
    pub code: u8,
    /// Destination register in the low nibble, source register in the high one.
    pub regs: u8,
    /// Signed offset (jumps, memory).
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

impl BpfInsn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Self {
            code,
            regs: (src << 4) | (dst & 0x0f),
            off,
            imm,
        }
    }

    /// The destination register.
    pub fn dst(&self) -> u8 {
        self.regs & 0x0f
    }

    /// The source register.
    pub fn src(&self) -> u8 {
        self.regs >> 4
    }
}

/// Opcodes used by the device filter (classes, operations and sources OR-ed together).
pub mod op {
    /// `BPF_LDX | BPF_MEM | BPF_W`: `dst = *(u32 *)(src + off)`.
    pub const LDX_W: u8 = 0x61;
    /// `BPF_ALU64 | BPF_MOV | BPF_K`: `dst = imm`.
    pub const MOV_K: u8 = 0xb7;
    /// `BPF_ALU64 | BPF_MOV | BPF_X`: `dst = src`.
    pub const MOV_X: u8 = 0xbf;
    /// `BPF_ALU64 | BPF_AND | BPF_K`: `dst &= imm`.
    pub const AND_K: u8 = 0x57;
    /// `BPF_ALU64 | BPF_RSH | BPF_K`: `dst >>= imm`.
    pub const RSH_K: u8 = 0x77;
    /// `BPF_JMP | BPF_JA`: `pc += off`.
    pub const JA: u8 = 0x05;
    /// `BPF_JMP | BPF_JEQ | BPF_K`: `if dst == imm: pc += off`.
    pub const JEQ_K: u8 = 0x15;
    /// `BPF_JMP | BPF_JNE | BPF_K`: `if dst != imm: pc += off`.
    pub const JNE_K: u8 = 0x55;
    /// `BPF_JMP | BPF_EXIT`: return `r0`.
    pub const EXIT: u8 = 0x95;
}

/// Registers of the generated program.
const R0: u8 = 0; // result, scratch
const R1: u8 = 1; // context (struct bpf_cgroup_dev_ctx *)
const R_ACCESS: u8 = 2;
const R_TYPE: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;

/// An assembler with forward labels.
#[derive(Default)]
struct Assembler {
    insns: Vec<BpfInsn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, usize)>,
}

impl Assembler {
    fn emit(&mut self, insn: BpfInsn) {
        self.insns.push(insn);
    }

    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }

    fn bind(&mut self, label: usize) {
        self.labels[label] = Some(self.insns.len());
    }

    fn jump(&mut self, code: u8, dst: u8, imm: i32, label: usize) {
        self.fixups.push((self.insns.len(), label));
        self.emit(BpfInsn::new(code, dst, 0, 0, imm));
    }

    fn ret(&mut self, value: i32) {
        self.emit(BpfInsn::new(op::MOV_K, R0, 0, 0, value));
        self.emit(BpfInsn::new(op::EXIT, 0, 0, 0, 0));
    }

    fn finish(mut self) -> Result<Vec<BpfInsn>> {
        let insns = self.insns.len();
        for (at, label) in self.fixups {
            // `compile` binds every label it jumps to, always ahead of the jump.
            let target = self.labels[label].unwrap_or(insns);
            let offset = target as i64 - at as i64 - 1;
            self.insns[at].off =
                i16::try_from(offset).map_err(|_| CgroupError::DeviceProgramTooLarge { insns })?;
        }
        Ok(self.insns)
    }
}

/// Compiles rules to a `BPF_PROG_TYPE_CGROUP_DEVICE` program that returns 1 to allow
/// and 0 to deny, by the semantics of [`decide`].
pub fn compile(rules: &[DeviceRule]) -> Result<Vec<BpfInsn>> {
    let mut asm = Assembler::default();
    // struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
    asm.emit(BpfInsn::new(op::LDX_W, R_ACCESS, R1, 0, 0));
    asm.emit(BpfInsn::new(op::MOV_X, R_TYPE, R_ACCESS, 0, 0));
    asm.emit(BpfInsn::new(op::AND_K, R_TYPE, 0, 0, 0xffff));
    asm.emit(BpfInsn::new(op::RSH_K, R_ACCESS, 0, 0, 16));
    asm.emit(BpfInsn::new(op::LDX_W, R_MAJOR, R1, 4, 0));
    asm.emit(BpfInsn::new(op::LDX_W, R_MINOR, R1, 8, 0));

    for bit in [ACC_MKNOD, ACC_READ, ACC_WRITE] {
        let next_bit = asm.label();
        // Skip this block unless the bit is requested.
        asm.emit(BpfInsn::new(op::MOV_X, R0, R_ACCESS, 0, 0));
        asm.emit(BpfInsn::new(op::AND_K, R0, 0, 0, bit as i32));
        asm.jump(op::JEQ_K, R0, 0, next_bit);

        let mut decided = false;
        for rule in rules.iter().rev().filter(|r| r.access & bit != 0) {
            let no_match = asm.label();
            let mut conditional = false;
            let kind = match rule.kind {
                DeviceKind::All => None,
                DeviceKind::Block => Some(DEV_BLOCK),
                DeviceKind::Char => Some(DEV_CHAR),
            };
            for (register, wanted) in [(R_TYPE, kind), (R_MAJOR, rule.major), (R_MINOR, rule.minor)]
            {
                if let Some(wanted) = wanted {
                    // Device numbers were checked to fit in i32 by `parse_rules`.
                    asm.jump(op::JNE_K, register, wanted as i32, no_match);
                    conditional = true;
                }
            }
            if rule.allow {
                asm.jump(op::JA, 0, 0, next_bit);
            } else {
                asm.ret(0);
            }
            asm.bind(no_match);
            if !conditional {
                // Rules before an unconditional one can never decide this bit.
                decided = true;
                break;
            }
        }
        if !decided {
            asm.ret(0);
        }
        asm.bind(next_bit);
    }
    asm.ret(1);
    asm.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_rules(json: &str) -> Vec<LinuxDeviceCgroup> {
        serde_json::from_str(json).unwrap()
    }

    fn rules(json: &str) -> Vec<DeviceRule> {
        parse_rules(&spec_rules(json)).unwrap()
    }

    /// Runs the subset of eBPF the generator emits against a device context.
    fn run(program: &[BpfInsn], access_type: u32, major: u32, minor: u32) -> u64 {
        let ctx = [access_type, major, minor];
        let mut reg = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let insn = program[pc];
            let (dst, src) = (usize::from(insn.dst()), usize::from(insn.src()));
            let imm = insn.imm as i64 as u64;
            let mut next = pc + 1;
            let jump = (pc as i64 + 1 + i64::from(insn.off)) as usize;
            match insn.code {
                op::LDX_W => {
                    assert_eq!(src, 1, "loads only from the context");
                    reg[dst] = u64::from(ctx[insn.off as usize / 4]);
                }
                op::MOV_K => reg[dst] = imm,
                op::MOV_X => reg[dst] = reg[src],
                op::AND_K => reg[dst] &= imm,
                op::RSH_K => reg[dst] >>= imm,
                op::JA => next = jump,
                op::JEQ_K if reg[dst] == imm => next = jump,
                op::JNE_K if reg[dst] != imm => next = jump,
                op::JEQ_K | op::JNE_K => {}
                op::EXIT => return reg[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
            assert!(next > pc, "backward jump at {pc}");
            pc = next;
        }
    }

    fn allowed(program: &[BpfInsn], kind: u32, major: u32, minor: u32, access: u32) -> bool {
        run(program, (access << 16) | kind, major, minor) == 1
    }

    const TYPICAL: &str = r#"[
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": true, "type": "c", "major": 136, "access": "rw"},
        {"allow": true, "type": "c", "access": "m"},
        {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "w"}
    ]"#;

    #[test]
    fn parses_types_wildcards_and_access() {
        let parsed = rules(
            r#"[{"allow": true, "type": "u", "major": -1, "minor": 7, "access": "mr"},
                {"allow": false}]"#,
        );
        assert_eq!(
            parsed,
            [
                DeviceRule {
                    allow: true,
                    kind: DeviceKind::Char,
                    major: None,
                    minor: Some(7),
                    access: ACC_MKNOD | ACC_READ,
                },
                DeviceRule {
                    allow: false,
                    kind: DeviceKind::All,
                    major: None,
                    minor: None,
                    access: ACC_MKNOD | ACC_READ | ACC_WRITE,
                },
            ]
        );
    }

    #[test]
    fn bad_access_letter_names_the_field() {
        let err = parse_rules(&spec_rules(
            r#"[{"allow": true}, {"allow": true, "access": "rx"}]"#,
        ))
        .unwrap_err();
        assert!(err.to_string().contains("devices[1].access"), "{err}");
    }

    #[test]
    fn fifo_rule_is_refused() {
        let err = parse_rules(&spec_rules(r#"[{"allow": true, "type": "p"}]"#)).unwrap_err();
        assert!(err.to_string().contains("devices[0].type"), "{err}");
    }

    #[test]
    fn negative_major_is_refused() {
        let err = parse_rules(&spec_rules(
            r#"[{"allow": true, "type": "c", "major": -5}]"#,
        ))
        .unwrap_err();
        assert!(err.to_string().contains("devices[0].major"), "{err}");
    }

    #[test]
    fn v1_writes_deny_all_first_then_rules_in_order() {
        let writes = v1_writes(&rules(TYPICAL));
        let expected = [
            ("devices.deny", "a"),
            ("devices.deny", "a *:* rwm"),
            ("devices.allow", "c 1:3 rwm"),
            ("devices.allow", "c 136:* rw"),
            ("devices.allow", "c *:* m"),
            ("devices.deny", "c 1:3 w"),
        ];
        let writes: Vec<(&str, &str)> = writes.iter().map(|(f, v)| (*f, v.as_str())).collect();
        assert_eq!(writes, expected);
    }

    #[test]
    fn program_for_single_allow_is_exact() {
        let program = compile(&rules(
            r#"[{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "r"}]"#,
        ))
        .unwrap();
        let i = BpfInsn::new;
        let expected = vec![
            i(op::LDX_W, 2, 1, 0, 0),
            i(op::MOV_X, 3, 2, 0, 0),
            i(op::AND_K, 3, 0, 0, 0xffff),
            i(op::RSH_K, 2, 0, 0, 16),
            i(op::LDX_W, 4, 1, 4, 0),
            i(op::LDX_W, 5, 1, 8, 0),
            // mknod: no rule names it -> deny if requested
            i(op::MOV_X, 0, 2, 0, 0),
            i(op::AND_K, 0, 0, 0, 1),
            i(op::JEQ_K, 0, 0, 2, 0),
            i(op::MOV_K, 0, 0, 0, 0),
            i(op::EXIT, 0, 0, 0, 0),
            // read: c 1:3 allows it
            i(op::MOV_X, 0, 2, 0, 0),
            i(op::AND_K, 0, 0, 0, 2),
            i(op::JEQ_K, 0, 0, 6, 0),
            i(op::JNE_K, 3, 0, 3, 2),
            i(op::JNE_K, 4, 0, 2, 1),
            i(op::JNE_K, 5, 0, 1, 3),
            i(op::JA, 0, 0, 2, 0),
            i(op::MOV_K, 0, 0, 0, 0),
            i(op::EXIT, 0, 0, 0, 0),
            // write: no rule names it
            i(op::MOV_X, 0, 2, 0, 0),
            i(op::AND_K, 0, 0, 0, 4),
            i(op::JEQ_K, 0, 0, 2, 0),
            i(op::MOV_K, 0, 0, 0, 0),
            i(op::EXIT, 0, 0, 0, 0),
            i(op::MOV_K, 0, 0, 0, 1),
            i(op::EXIT, 0, 0, 0, 0),
        ];
        assert_eq!(program, expected);
    }

    #[test]
    fn unconditional_rule_ends_the_block() {
        let program = compile(&rules(
            r#"[{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                {"allow": true, "access": "rwm"}]"#,
        ))
        .unwrap();
        // The allow-all rule is the last one; the c 1:3 rule is never emitted.
        assert!(!program.iter().any(|i| i.code == op::JNE_K));
        assert!(allowed(&program, DEV_BLOCK, 8, 0, ACC_READ | ACC_WRITE));
    }

    #[test]
    fn program_agrees_with_reference_semantics() {
        let sets = [
            TYPICAL,
            r#"[]"#,
            r#"[{"allow": true, "access": "rwm"}, {"allow": false, "type": "b", "access": "w"}]"#,
            r#"[{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "r"},
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "w"}]"#,
            r#"[{"allow": true, "type": "b", "major": 8, "access": "rw"},
                {"allow": false, "type": "b", "major": 8, "minor": 1, "access": "r"},
                {"allow": true, "type": "a", "minor": 1, "access": "m"}]"#,
        ];
        for set in sets {
            let parsed = rules(set);
            let program = compile(&parsed).unwrap();
            for kind in [DEV_BLOCK, DEV_CHAR] {
                for (major, minor) in [(1, 3), (1, 5), (8, 0), (8, 1), (136, 4), (5, 1)] {
                    for access in 1..8 {
                        assert_eq!(
                            allowed(&program, kind, major, minor, access),
                            decide(&parsed, kind, major, minor, access),
                            "rules {set} kind {kind} {major}:{minor} access {access}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn later_rule_overrides_earlier() {
        let parsed = rules(TYPICAL);
        assert!(decide(&parsed, DEV_CHAR, 1, 3, ACC_READ));
        assert!(!decide(&parsed, DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE));
        assert!(decide(&parsed, DEV_CHAR, 136, 9, ACC_WRITE));
        assert!(decide(&parsed, DEV_CHAR, 136, 9, ACC_MKNOD | ACC_WRITE));
        assert!(decide(&parsed, DEV_CHAR, 200, 1, ACC_MKNOD));
        assert!(!decide(&parsed, DEV_BLOCK, 8, 0, ACC_MKNOD));
        assert!(!decide(&parsed, DEV_CHAR, 1, 5, ACC_READ));
    }

    #[test]
    fn program_beyond_jump_range_is_refused() {
        let rule = DeviceRule {
            allow: true,
            kind: DeviceKind::Char,
            major: Some(1),
            minor: Some(3),
            access: ACC_READ,
        };
        let err = compile(&vec![rule; 10_000]).unwrap_err();
        assert!(
            matches!(err, CgroupError::DeviceProgramTooLarge { .. }),
            "{err}"
        );
    }

    #[test]
    fn default_devices_allow_null_but_not_disks() {
        let parsed = parse_rules(&default_allowed_devices()).unwrap();
        assert!(decide(&parsed, DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE));
        assert!(decide(&parsed, DEV_BLOCK, 8, 0, ACC_MKNOD));
        assert!(!decide(&parsed, DEV_BLOCK, 8, 0, ACC_READ));
    }
}
