/*
 * The first thing _PG_init does: refuse to load a build compiled for CPU
 * features this machine lacks.
 *
 * The Rust code is compiled for the building machine's CPU (.cargo/config.toml)
 * or for the portable x86_64 set (scripts/package.sh), so it may contain
 * AVX/AVX-512 instructions anywhere, including in code that would format and
 * raise an error. Copied to an older CPU it would die of SIGILL and take the
 * server through crash recovery. This file is compiled for baseline x86_64
 * (build.rs passes -march=x86-64), asks the CPU directly (CPUID, and XGETBV for
 * the register state the operating system saves), and raises the ERROR itself.
 * is_x86_feature_detected! cannot be used: it answers true, without asking the
 * CPU, for any feature enabled at compile time.
 *
 * PAZPAZ_BUILD_FEATURES (from build.rs) lists the target features the Rust code
 * was compiled with, comma-separated, as cargo reports them.
 */
#include "postgres.h"

#include <cpuid.h>
#include <string.h>

#include "fmgr.h"

#ifndef PAZPAZ_BUILD_FEATURES
#error "build.rs defines PAZPAZ_BUILD_FEATURES"
#endif

/* Compiled for baseline x86_64 only (SSE2), whatever CFLAGS say. */
#if defined(__SSE3__) || defined(__SSSE3__) || defined(__SSE4_1__) || defined(__SSE4_2__) || \
	defined(__POPCNT__) || defined(__AES__) || defined(__PCLMUL__) || defined(__AVX__) || \
	defined(__AVX2__) || defined(__AVX512F__) || defined(__BMI__) || defined(__BMI2__) || \
	defined(__LZCNT__) || defined(__FMA__) || defined(__F16C__) || defined(__MOVBE__) || \
	defined(__VAES__) || defined(__VPCLMULQDQ__) || defined(__SHA__) || defined(__GFNI__) || \
	defined(__ADX__) || defined(__SSE4A__) || defined(__TBM__)
#error "cpu_check.c must be compiled for baseline x86_64 (-march=x86-64)"
#endif

enum reg
{
	L1_ECX,						/* leaf 1 */
	L7_EBX,						/* leaf 7 subleaf 0 */
	L7_ECX,
	L7_EDX,
	L7S1_EAX,					/* leaf 7 subleaf 1 */
	LDS1_EAX,					/* leaf 0xD subleaf 1 (XSAVE variants) */
	EXT1_ECX,					/* leaf 0x80000001 (AMD extensions, LZCNT) */
	NREGS
};

/* Register state the feature needs the OS to save (XCR0 bits). */
enum state
{
	ST_NONE,
	ST_YMM,						/* SSE and AVX: bits 1, 2 */
	ST_ZMM						/* plus opmask, ZMM_Hi256, Hi16_ZMM: bits 5-7 */
};

struct feature
{
	const char *name;			/* Rust's name */
	enum reg	reg;
	int			bit;
	enum state	state;
};

/* Intel SDM vol. 2A (CPUID); AMD APM vol. 3, appendix E. */
static const struct feature features[] = {
	{"sse3", L1_ECX, 0, ST_NONE},
	{"pclmulqdq", L1_ECX, 1, ST_NONE},
	{"ssse3", L1_ECX, 9, ST_NONE},
	{"fma", L1_ECX, 12, ST_YMM},
	{"cmpxchg16b", L1_ECX, 13, ST_NONE},
	{"sse4.1", L1_ECX, 19, ST_NONE},
	{"sse4.2", L1_ECX, 20, ST_NONE},
	{"movbe", L1_ECX, 22, ST_NONE},
	{"popcnt", L1_ECX, 23, ST_NONE},
	{"aes", L1_ECX, 25, ST_NONE},
	{"xsave", L1_ECX, 26, ST_NONE},
	{"avx", L1_ECX, 28, ST_YMM},
	{"f16c", L1_ECX, 29, ST_YMM},
	{"rdrand", L1_ECX, 30, ST_NONE},
	{"bmi1", L7_EBX, 3, ST_NONE},
	{"avx2", L7_EBX, 5, ST_YMM},
	{"bmi2", L7_EBX, 8, ST_NONE},
	{"avx512f", L7_EBX, 16, ST_ZMM},
	{"avx512dq", L7_EBX, 17, ST_ZMM},
	{"rdseed", L7_EBX, 18, ST_NONE},
	{"adx", L7_EBX, 19, ST_NONE},
	{"avx512ifma", L7_EBX, 21, ST_ZMM},
	{"avx512cd", L7_EBX, 28, ST_ZMM},
	{"sha", L7_EBX, 29, ST_NONE},
	{"avx512bw", L7_EBX, 30, ST_ZMM},
	{"avx512vl", L7_EBX, 31, ST_ZMM},
	{"avx512vbmi", L7_ECX, 1, ST_ZMM},
	{"avx512vbmi2", L7_ECX, 6, ST_ZMM},
	{"gfni", L7_ECX, 8, ST_NONE},
	{"vaes", L7_ECX, 9, ST_YMM},
	{"vpclmulqdq", L7_ECX, 10, ST_YMM},
	{"avx512vnni", L7_ECX, 11, ST_ZMM},
	{"avx512bitalg", L7_ECX, 12, ST_ZMM},
	{"avx512vpopcntdq", L7_ECX, 14, ST_ZMM},
	{"avx512vp2intersect", L7_EDX, 8, ST_ZMM},
	{"avx512fp16", L7_EDX, 23, ST_ZMM},
	{"avxvnni", L7S1_EAX, 4, ST_YMM},
	{"avx512bf16", L7S1_EAX, 5, ST_ZMM},
	{"avxifma", L7S1_EAX, 23, ST_YMM},
	{"xsaveopt", LDS1_EAX, 0, ST_NONE},
	{"xsavec", LDS1_EAX, 1, ST_NONE},
	{"xsaves", LDS1_EAX, 3, ST_NONE},
	{"lzcnt", EXT1_ECX, 5, ST_NONE},
	{"sse4a", EXT1_ECX, 6, ST_NONE},
	{"tbm", EXT1_ECX, 21, ST_NONE},
};

/* Every x86_64 CPU has these (the x86_64 baseline). */
static const char *const baseline[] = {"fxsr", "sse", "sse2", "x87"};

struct pazpaz_cpu
{
	unsigned int regs[NREGS];
	unsigned long long xcr0;	/* register state the OS saves */
};

static void
pazpaz_cpu_read(struct pazpaz_cpu *cpu)
{
	unsigned int a, b, c, d;
	unsigned int max = __get_cpuid_max(0, NULL);
	unsigned int max_ext = __get_cpuid_max(0x80000000, NULL);

	memset(cpu, 0, sizeof(*cpu));
	if (max >= 1)
	{
		__cpuid_count(1, 0, a, b, c, d);
		cpu->regs[L1_ECX] = c;
		/* OSXSAVE (ECX bit 27): the OS enabled XGETBV. */
		if (c & (1u << 27))
		{
			unsigned int lo, hi;

			__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
			cpu->xcr0 = ((unsigned long long) hi << 32) | lo;
		}
	}
	if (max >= 7)
	{
		__cpuid_count(7, 0, a, b, c, d);
		cpu->regs[L7_EBX] = b;
		cpu->regs[L7_ECX] = c;
		cpu->regs[L7_EDX] = d;
		if (a >= 1)
		{
			__cpuid_count(7, 1, a, b, c, d);
			cpu->regs[L7S1_EAX] = a;
		}
	}
	if (max >= 0xD)
	{
		__cpuid_count(0xD, 1, a, b, c, d);
		cpu->regs[LDS1_EAX] = a;
	}
	if (max_ext >= 0x80000001)
	{
		__cpuid_count(0x80000001, 0, a, b, c, d);
		cpu->regs[EXT1_ECX] = c;
	}
}

/* 1 if provided, 0 if not, -1 if the name is not in the table. */
static int
pazpaz_cpu_lookup(const struct pazpaz_cpu *cpu, const char *name, size_t len)
{
	size_t		i;

	for (i = 0; i < lengthof(baseline); i++)
		if (strlen(baseline[i]) == len && memcmp(baseline[i], name, len) == 0)
			return 1;
	for (i = 0; i < lengthof(features); i++)
	{
		const struct feature *f = &features[i];

		if (strlen(f->name) != len || memcmp(f->name, name, len) != 0)
			continue;
		if (!(cpu->regs[f->reg] & (1u << f->bit)))
			return 0;
		if (f->state == ST_YMM && (cpu->xcr0 & 0x6) != 0x6)
			return 0;
		if (f->state == ST_ZMM && (cpu->xcr0 & 0xE6) != 0xE6)
			return 0;
		return 1;
	}
	return -1;
}

/*
 * 1 if the CPU (and the OS, for register state) provides the feature named
 * `name` (Rust's name, `len` bytes), 0 if not, -1 if the name is not in the
 * table. For tests.
 */
int
pazpaz_cpu_has(const char *name, size_t len)
{
	struct pazpaz_cpu cpu;

	pazpaz_cpu_read(&cpu);
	return pazpaz_cpu_lookup(&cpu, name, len);
}

/* The i-th feature name of the table, NULL past its end; for tests. */
const char *
pazpaz_cpu_feature(size_t i)
{
	return i < lengthof(features) ? features[i].name : NULL;
}

/* The features the Rust code was compiled with, for tests. */
const char *
pazpaz_cpu_build_features(void)
{
	return PAZPAZ_BUILD_FEATURES;
}

/*
 * Raises an ERROR naming the features of PAZPAZ_BUILD_FEATURES this machine
 * lacks; returns if there are none. Features missing from the table cannot be
 * checked and are let through (a test checks that the table covers
 * everything the build machine's own CPU enables).
 */
void
pazpaz_require_cpu_features(void)
{
	static const char build[] = PAZPAZ_BUILD_FEATURES;
	struct pazpaz_cpu cpu;
	char		missing[512];
	size_t		used = 0;
	const char *p = build;

	pazpaz_cpu_read(&cpu);
	missing[0] = '\0';
	while (*p)
	{
		const char *end = strchr(p, ',');
		size_t		len = end ? (size_t) (end - p) : strlen(p);

		if (len > 0 && pazpaz_cpu_lookup(&cpu, p, len) == 0 && used + len + 3 < sizeof(missing))
		{
			if (used > 0)
			{
				memcpy(missing + used, ", ", 2);
				used += 2;
			}
			memcpy(missing + used, p, len);
			used += len;
			missing[used] = '\0';
		}
		p += len;
		if (*p == ',')
			p++;
	}
	if (used > 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("this build of pazpaz_crypto needs CPU features this machine lacks: %s", missing),
				 errhint("It was compiled for another CPU. Build it on this machine (cargo pgrx install), "
						 "or install the portable package that scripts/package.sh makes.")));
}
