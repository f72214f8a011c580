# The CPU a build of the extension targets, in one place (sourced).
#
# Builds for the machine they run on (`cargo pgrx install`, the demo, the
# tests, the benchmark) use .cargo/config.toml: `-C target-cpu=native`.
# Builds that go to other machines (scripts/package.sh) and the fuzz targets
# use the portable x86_64 set below: AES-NI, CLMUL and AVX, which most x86_64
# CPUs since 2011 have (not some Atom, Celeron and Pentium models). Faster
# code paths (VAES, AVX-512) are then chosen at run time. Either way,
# _PG_init refuses a CPU that lacks a feature the build was compiled for
# (src/cpu_check.c). README "CPU targets" has the measured cost of each.
PORTABLE_RUSTFLAGS_X86_64="-C target-feature=+aes,+pclmulqdq,+ssse3,+sse4.1,+avx"

# The RUSTFLAGS of a portable build on this architecture (none elsewhere:
# the target's defaults with run-time detection of the crypto instructions).
portable_rustflags() {
    if [ "$(uname -m)" = x86_64 ]; then echo "$PORTABLE_RUSTFLAGS_X86_64"; fi
}
