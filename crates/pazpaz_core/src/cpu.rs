//! Which CPU features a build was compiled for that the running CPU lacks.
//!
//! A build for one machine (`target-cpu=native`) or for the portable x86_64
//! set (AES-NI, PCLMULQDQ, AVX) executes those instructions unconditionally.
//! Copied to an older CPU it would die of SIGILL on the first key, which takes
//! every PostgreSQL session down with it (crash recovery). The extension asks
//! here at load time and refuses to load instead.
//!
//! `is_x86_feature_detected!` cannot answer this: it returns `true` for any
//! feature enabled at compile time without asking the CPU. So the CPU is
//! asked directly (CPUID, and XGETBV for the register state the operating
//! system saves), for every feature the build was compiled with.

/// Names (Rust's) of features enabled at compile time that this CPU or
/// operating system does not provide. Empty on other architectures.
pub fn missing_features() -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        let cpu = x86::Cpu::read();
        x86::FEATURES
            .iter()
            .filter(|f| f.compiled && !cpu.has(f))
            .map(|f| f.name)
            .collect()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Vec::new()
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::__cpuid_count;

    #[derive(Clone, Copy)]
    pub enum Reg {
        /// Leaf 1, ECX / EDX.
        L1Ecx,
        /// Leaf 7 subleaf 0, EBX / ECX / EDX.
        L7Ebx,
        L7Ecx,
        L7Edx,
        /// Leaf 7 subleaf 1, EAX.
        L7s1Eax,
        /// Leaf 0xD subleaf 1, EAX (XSAVE variants).
        LdS1Eax,
        /// Leaf 0x8000_0001, ECX (AMD extensions, LZCNT).
        Ext1Ecx,
    }

    /// Register state the feature needs the OS to save (XCR0 bits).
    #[derive(Clone, Copy, PartialEq)]
    pub enum State {
        None,
        /// SSE and AVX (YMM) state.
        Ymm,
        /// Plus opmask and ZMM state.
        Zmm,
    }

    pub struct Feature {
        pub name: &'static str,
        /// Its name in Linux's /proc/cpuinfo (for the test).
        #[cfg_attr(not(test), allow(dead_code))]
        pub linux: &'static str,
        pub compiled: bool,
        pub reg: Reg,
        pub bit: u32,
        pub state: State,
    }

    macro_rules! features {
        ($(($name:tt, $linux:literal, $reg:ident, $bit:literal, $state:ident)),* $(,)?) => {
            pub const FEATURES: &[Feature] = &[$(Feature {
                name: $name,
                linux: $linux,
                compiled: cfg!(target_feature = $name),
                reg: Reg::$reg,
                bit: $bit,
                state: State::$state,
            }),*];
        };
    }

    // Intel SDM vol. 2A, CPUID; AMD APM vol. 3, appendix E.
    features!(
        ("sse3", "pni", L1Ecx, 0, None),
        ("pclmulqdq", "pclmulqdq", L1Ecx, 1, None),
        ("ssse3", "ssse3", L1Ecx, 9, None),
        ("fma", "fma", L1Ecx, 12, Ymm),
        ("cmpxchg16b", "cx16", L1Ecx, 13, None),
        ("sse4.1", "sse4_1", L1Ecx, 19, None),
        ("sse4.2", "sse4_2", L1Ecx, 20, None),
        ("movbe", "movbe", L1Ecx, 22, None),
        ("popcnt", "popcnt", L1Ecx, 23, None),
        ("aes", "aes", L1Ecx, 25, None),
        ("xsave", "xsave", L1Ecx, 26, None),
        ("avx", "avx", L1Ecx, 28, Ymm),
        ("f16c", "f16c", L1Ecx, 29, Ymm),
        ("rdrand", "rdrand", L1Ecx, 30, None),
        ("bmi1", "bmi1", L7Ebx, 3, None),
        ("avx2", "avx2", L7Ebx, 5, Ymm),
        ("bmi2", "bmi2", L7Ebx, 8, None),
        ("avx512f", "avx512f", L7Ebx, 16, Zmm),
        ("avx512dq", "avx512dq", L7Ebx, 17, Zmm),
        ("rdseed", "rdseed", L7Ebx, 18, None),
        ("adx", "adx", L7Ebx, 19, None),
        ("avx512ifma", "avx512ifma", L7Ebx, 21, Zmm),
        ("avx512cd", "avx512cd", L7Ebx, 28, Zmm),
        ("sha", "sha_ni", L7Ebx, 29, None),
        ("avx512bw", "avx512bw", L7Ebx, 30, Zmm),
        ("avx512vl", "avx512vl", L7Ebx, 31, Zmm),
        ("avx512vbmi", "avx512vbmi", L7Ecx, 1, Zmm),
        ("avx512vbmi2", "avx512_vbmi2", L7Ecx, 6, Zmm),
        ("gfni", "gfni", L7Ecx, 8, None),
        ("vaes", "vaes", L7Ecx, 9, Ymm),
        ("vpclmulqdq", "vpclmulqdq", L7Ecx, 10, Ymm),
        ("avx512vnni", "avx512_vnni", L7Ecx, 11, Zmm),
        ("avx512bitalg", "avx512_bitalg", L7Ecx, 12, Zmm),
        ("avx512vpopcntdq", "avx512_vpopcntdq", L7Ecx, 14, Zmm),
        ("avx512vp2intersect", "avx512_vp2intersect", L7Edx, 8, Zmm),
        ("avx512fp16", "avx512_fp16", L7Edx, 23, Zmm),
        ("avxvnni", "avx_vnni", L7s1Eax, 4, Ymm),
        ("avx512bf16", "avx512_bf16", L7s1Eax, 5, Zmm),
        ("avxifma", "avx_ifma", L7s1Eax, 23, Ymm),
        ("xsaveopt", "xsaveopt", LdS1Eax, 0, None),
        ("xsavec", "xsavec", LdS1Eax, 1, None),
        ("xsaves", "xsaves", LdS1Eax, 3, None),
        ("lzcnt", "abm", Ext1Ecx, 5, None),
        ("sse4a", "sse4a", Ext1Ecx, 6, None),
        ("tbm", "tbm", Ext1Ecx, 21, None),
    );

    pub struct Cpu {
        l1_ecx: u32,
        l7: [u32; 3],
        l7s1_eax: u32,
        ld_s1_eax: u32,
        ext1_ecx: u32,
        xcr0: u64,
    }

    impl Cpu {
        pub fn read() -> Cpu {
            let max = __cpuid_count(0, 0).eax;
            let max_ext = __cpuid_count(0x8000_0000, 0).eax;
            let leaf = |l: u32, s: u32| if l <= max { Some(__cpuid_count(l, s)) } else { None };
            let l1 = leaf(1, 0);
            let l1_ecx = l1.map_or(0, |r| r.ecx);
            let l7 = leaf(7, 0);
            let l7s1_eax = if l7.is_some_and(|r| r.eax >= 1) { leaf(7, 1).map_or(0, |r| r.eax) } else { 0 };
            let ld_s1_eax = leaf(0xD, 1).map_or(0, |r| r.eax);
            let ext1_ecx = if max_ext >= 0x8000_0001 { __cpuid_count(0x8000_0001, 0).ecx } else { 0 };
            // OSXSAVE (leaf 1 ECX bit 27): the OS enabled XGETBV.
            let xcr0 = if l1_ecx & (1 << 27) != 0 { xgetbv0() } else { 0 };
            Cpu {
                l1_ecx,
                l7: l7.map_or([0; 3], |r| [r.ebx, r.ecx, r.edx]),
                l7s1_eax,
                ld_s1_eax,
                ext1_ecx,
                xcr0,
            }
        }

        pub fn has(&self, f: &Feature) -> bool {
            self.cpu_has(f) && self.os_saves(f.state)
        }

        pub fn cpu_has(&self, f: &Feature) -> bool {
            let r = match f.reg {
                Reg::L1Ecx => self.l1_ecx,
                Reg::L7Ebx => self.l7[0],
                Reg::L7Ecx => self.l7[1],
                Reg::L7Edx => self.l7[2],
                Reg::L7s1Eax => self.l7s1_eax,
                Reg::LdS1Eax => self.ld_s1_eax,
                Reg::Ext1Ecx => self.ext1_ecx,
            };
            r & (1 << f.bit) != 0
        }

        fn os_saves(&self, s: State) -> bool {
            // XCR0: bit 1 SSE, bit 2 AVX (YMM upper halves), bits 5–7
            // opmask, ZMM upper halves, ZMM16–31.
            match s {
                State::None => true,
                State::Ymm => self.xcr0 & 0b110 == 0b110,
                State::Zmm => self.xcr0 & 0b1110_0110 == 0b1110_0110,
            }
        }
    }

    #[cfg(test)]
    impl Cpu {
        /// Every CPUID feature bit set, with the given XCR0.
        pub fn with_all_bits(xcr0: u64) -> Cpu {
            Cpu { l1_ecx: !0, l7: [!0; 3], l7s1_eax: !0, ld_s1_eax: !0, ext1_ecx: !0, xcr0 }
        }
    }

    /// XCR0, the register state the operating system saves on context switch.
    #[allow(unsafe_code)]
    fn xgetbv0() -> u64 {
        #[target_feature(enable = "xsave")]
        unsafe fn read() -> u64 {
            std::arch::x86_64::_xgetbv(0)
        }
        // SAFETY: only called when CPUID reports OSXSAVE, i.e. the OS has
        // enabled XSAVE and XGETBV is available.
        unsafe { read() }
    }
}

#[cfg(all(test, target_arch = "x86_64", target_os = "linux"))]
mod tests {
    use super::x86::{Cpu, FEATURES};

    /// The CPUID decoding agrees with the kernel's for every feature listed
    /// (the kernel hides what the OS does not support, e.g. AVX-512 state).
    /// RDRAND and RDSEED are left out: Linux hides them on CPUs with known
    /// faulty implementations (e.g. the RDSEED erratum of AMD Zen 5), though
    /// CPUID still reports them; compilers never emit them unasked.
    #[test]
    fn cpuid_decoding_matches_proc_cpuinfo() {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        let flags: std::collections::HashSet<&str> = info
            .lines()
            .find(|l| l.starts_with("flags"))
            .expect("a flags line")
            .split(':')
            .nth(1)
            .unwrap()
            .split_whitespace()
            .collect();
        let cpu = Cpu::read();
        let disagree: Vec<_> = FEATURES
            .iter()
            .filter(|f| !["rdrand", "rdseed"].contains(&f.name))
            .filter(|f| cpu.has(f) != flags.contains(f.linux))
            .map(|f| format!("{} (cpuid {}, cpuinfo {})", f.name, cpu.has(f), flags.contains(f.linux)))
            .collect();
        assert!(disagree.is_empty(), "{disagree:?}");
        // The machine running the tests runs the build, so nothing is missing.
        assert_eq!(super::missing_features(), Vec::<&str>::new());
    }

    /// Every feature `target-cpu=native` turns on here is checked at load
    /// time (apart from the x86_64 baseline, which every CPU has).
    #[test]
    fn the_table_covers_what_native_builds_enable() {
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let out = std::process::Command::new(rustc)
            .args(["--print", "cfg", "-C", "target-cpu=native"])
            .output()
            .expect("rustc runs");
        let cfg = String::from_utf8(out.stdout).unwrap();
        let unknown: Vec<_> = cfg
            .lines()
            .filter_map(|l| l.strip_prefix("target_feature=\"")?.strip_suffix('"'))
            .filter(|f| !["fxsr", "sse", "sse2"].contains(f) && !FEATURES.iter().any(|k| k.name == *f))
            .collect();
        assert!(unknown.is_empty(), "not checked at load time: {unknown:?}");
    }

    /// A CPU that has AVX-512 but an OS that does not save ZMM state cannot
    /// run AVX-512 code; AVX needs YMM state.
    #[test]
    fn register_state_is_required() {
        let f = |n: &str| FEATURES.iter().find(|f| f.name == n).unwrap();
        let all_bits = Cpu::with_all_bits(0b110);
        assert!(all_bits.cpu_has(f("avx512f")) && !all_bits.has(f("avx512f")));
        assert!(all_bits.has(f("avx2")) && all_bits.has(f("aes")));
        let no_os = Cpu::with_all_bits(0);
        assert!(!no_os.has(f("avx")) && !no_os.has(f("vaes")) && no_os.has(f("pclmulqdq")));
        assert!(Cpu::with_all_bits(0b1110_0110).has(f("avx512bw")));
    }
}
