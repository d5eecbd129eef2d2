/*
 * dtype.c - safetensors element types and float conversions.
 *
 * The table follows the Dtype enum of the reference implementation
 * (huggingface/safetensors, safetensors/src/tensor.rs): names are its
 * spellings and sizes are in bits because F4 and F6_* pack several
 * elements per byte.  The FNUZ fp8 variants it also lists are not in
 * enum gm_dtype; files using them are refused as having an unknown dtype.
 */
#include "formats/dtype.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Tensor data is little-endian; conversions load it with memcpy. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "git-model assumes a little-endian host: safetensors data is little-endian"
#endif

static const struct {
	const char *name;  /* safetensors */
	const char *torch; /* torch.dtype spelling; NULL when torch has none */
	unsigned bits;
	unsigned blk_elems, blk_bytes; /* block types only (bits 0) */
} dtypes[GM_DTYPE_COUNT] = {
	[GM_DTYPE_BOOL] = { "BOOL", "bool", 8 },
	[GM_DTYPE_U8] = { "U8", "uint8", 8 },
	[GM_DTYPE_I8] = { "I8", "int8", 8 },
	[GM_DTYPE_F8_E5M2] = { "F8_E5M2", "float8_e5m2", 8 },
	[GM_DTYPE_F8_E4M3] = { "F8_E4M3", "float8_e4m3fn", 8 },
	[GM_DTYPE_F8_E8M0] = { "F8_E8M0", "float8_e8m0fnu", 8 },
	[GM_DTYPE_I16] = { "I16", "int16", 16 },
	[GM_DTYPE_U16] = { "U16", "uint16", 16 },
	[GM_DTYPE_F16] = { "F16", "float16", 16 },
	[GM_DTYPE_BF16] = { "BF16", "bfloat16", 16 },
	[GM_DTYPE_I32] = { "I32", "int32", 32 },
	[GM_DTYPE_U32] = { "U32", "uint32", 32 },
	[GM_DTYPE_F32] = { "F32", "float32", 32 },
	[GM_DTYPE_F64] = { "F64", "float64", 64 },
	[GM_DTYPE_I64] = { "I64", "int64", 64 },
	[GM_DTYPE_U64] = { "U64", "uint64", 64 },
	[GM_DTYPE_C64] = { "C64", "complex64", 64 },
	[GM_DTYPE_F4] = { "F4", NULL, 4 },
	[GM_DTYPE_F6_E2M3] = { "F6_E2M3", NULL, 6 },
	[GM_DTYPE_F6_E3M2] = { "F6_E3M2", NULL, 6 },
	/* ggml's block_* structs (ggml-common.h): f16 scales, packed quants */
	[GM_DTYPE_Q4_0] = { "Q4_0", NULL, 0, 32, 18 },
	[GM_DTYPE_Q4_1] = { "Q4_1", NULL, 0, 32, 20 },
	[GM_DTYPE_Q5_0] = { "Q5_0", NULL, 0, 32, 22 },
	[GM_DTYPE_Q5_1] = { "Q5_1", NULL, 0, 32, 24 },
	[GM_DTYPE_Q8_0] = { "Q8_0", NULL, 0, 32, 34 },
	[GM_DTYPE_Q8_1] = { "Q8_1", NULL, 0, 32, 36 },
	[GM_DTYPE_Q2_K] = { "Q2_K", NULL, 0, 256, 84 },
	[GM_DTYPE_Q3_K] = { "Q3_K", NULL, 0, 256, 110 },
	[GM_DTYPE_Q4_K] = { "Q4_K", NULL, 0, 256, 144 },
	[GM_DTYPE_Q5_K] = { "Q5_K", NULL, 0, 256, 176 },
	[GM_DTYPE_Q6_K] = { "Q6_K", NULL, 0, 256, 210 },
	[GM_DTYPE_Q8_K] = { "Q8_K", NULL, 0, 256, 292 },
};

/* What users may type for --dtype and what config.json's torch_dtype holds. */
static const struct {
	const char *alias;
	enum gm_dtype dtype;
} user_names[] = {
	{ "bf16", GM_DTYPE_BF16 },    { "bfloat16", GM_DTYPE_BF16 },
	{ "f16", GM_DTYPE_F16 },      { "fp16", GM_DTYPE_F16 },
	{ "float16", GM_DTYPE_F16 },  { "half", GM_DTYPE_F16 },
	{ "f32", GM_DTYPE_F32 },      { "fp32", GM_DTYPE_F32 },
	{ "float32", GM_DTYPE_F32 },  { "float", GM_DTYPE_F32 },
	{ "f64", GM_DTYPE_F64 },      { "fp64", GM_DTYPE_F64 },
	{ "float64", GM_DTYPE_F64 },  { "double", GM_DTYPE_F64 },
};

static int valid(enum gm_dtype t)
{
	return (unsigned)t < GM_DTYPE_COUNT;
}

const char *gm_dtype_name(enum gm_dtype t)
{
	/* Never NULL: the name ends up in messages. */
	return valid(t) ? dtypes[t].name : "unknown";
}

const char *gm_dtype_torch_name(enum gm_dtype t)
{
	return valid(t) ? dtypes[t].torch : NULL;
}

unsigned gm_dtype_bits(enum gm_dtype t)
{
	return valid(t) ? dtypes[t].bits : 0;
}

int gm_dtype_is_block(enum gm_dtype t)
{
	return valid(t) && dtypes[t].blk_elems;
}

void gm_dtype_block(enum gm_dtype t, unsigned *elems, unsigned *bytes)
{
	*elems = gm_dtype_is_block(t) ? dtypes[t].blk_elems : 0;
	*bytes = gm_dtype_is_block(t) ? dtypes[t].blk_bytes : 0;
}

int gm_dtype_from_name(const char *name, enum gm_dtype *out, gm_error *err)
{
	int i;

	for (i = 0; i < GM_DTYPE_COUNT; i++) {
		if (dtypes[i].bits && !strcmp(name, dtypes[i].name)) {
			*out = (enum gm_dtype)i;
			return 0;
		}
	}
	return gm_error_set(err, GM_EFORMAT, "unknown dtype '%s' (not a safetensors dtype)", name);
}

int gm_dtype_from_user(const char *name, enum gm_dtype *out, gm_error *err)
{
	size_t i;

	/* "torch.bfloat16" appears in configs written by str(torch.dtype). */
	if (!strncmp(name, "torch.", 6))
		name += 6;
	for (i = 0; i < sizeof(user_names) / sizeof(user_names[0]); i++) {
		if (!strcasecmp(name, user_names[i].alias)) {
			*out = user_names[i].dtype;
			return 0;
		}
	}
	return gm_error_set(err, GM_EINVAL, "unknown dtype '%s' (expected bf16, f16, f32 or f64)", name);
}

int gm_dtype_nbytes(enum gm_dtype t, uint64_t n, uint64_t *out, gm_error *err)
{
	unsigned bits = gm_dtype_bits(t);
	uint64_t total;

	if (gm_dtype_is_block(t)) {
		if (n % dtypes[t].blk_elems)
			return gm_error_set(err, GM_EFORMAT, "%llu elements of %s are not a whole number of %u-element blocks",
					    (unsigned long long)n, dtypes[t].name, dtypes[t].blk_elems);
		if (__builtin_mul_overflow(n / dtypes[t].blk_elems, (uint64_t)dtypes[t].blk_bytes, out))
			return gm_error_set(err, GM_EFORMAT, "%llu elements of %s overflow a 64-bit byte count",
					    (unsigned long long)n, dtypes[t].name);
		return 0;
	}
	if (!bits)
		return gm_error_set(err, GM_EINVAL, "invalid dtype %d", (int)t);
	if (__builtin_mul_overflow(n, (uint64_t)bits, &total))
		return gm_error_set(err, GM_EFORMAT, "%llu elements of %s overflow a 64-bit byte count",
				    (unsigned long long)n, gm_dtype_name(t));
	if (total % 8)
		return gm_error_set(err, GM_EFORMAT,
				    "%llu elements of %s (%u bits each) do not fill a whole number of bytes",
				    (unsigned long long)n, gm_dtype_name(t), bits);
	*out = total / 8;
	return 0;
}

static uint32_t f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof(u));
	return u;
}

static float bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

float gm_bf16_to_f32(uint16_t h)
{
	return bits_f32((uint32_t)h << 16);
}

uint16_t gm_f32_to_bf16(float f)
{
	uint32_t u = f32_bits(f);

	/* Truncating a NaN whose payload sits in the low bits would yield
	 * inf: keep the sign and high payload and force the quiet bit. */
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((u >> 16) | 0x0040u);
	/* Round to nearest even; a carry out of the mantissa bumps the
	 * exponent, which is how large finite values correctly become inf. */
	u += 0x7fffu + ((u >> 16) & 1u);
	return (uint16_t)(u >> 16);
}

float gm_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t exp = (h >> 10) & 0x1fu;
	uint32_t mant = h & 0x3ffu;

	if (exp == 0x1f) /* inf or NaN, payload kept */
		return bits_f32(sign | 0x7f800000u | (mant << 13));
	if (exp)
		return bits_f32(sign | ((exp + 127 - 15) << 23) | (mant << 13));
	if (!mant)
		return bits_f32(sign);
	/* Subnormal: mant x 2^-24, exact in f32 (a power-of-two scale). */
	return sign ? -(float)mant * 0x1p-24f : (float)mant * 0x1p-24f;
}

/* Shifts m right by shift bits rounding to nearest even (1 <= shift <= 31). */
static uint32_t shift_rne(uint32_t m, unsigned shift)
{
	uint32_t r = m >> shift;
	uint32_t rem = m & ((1u << shift) - 1);
	uint32_t half = 1u << (shift - 1);

	if (rem > half || (rem == half && (r & 1)))
		r++;
	return r;
}

uint16_t gm_f32_to_f16(float f)
{
	uint32_t u = f32_bits(f);
	uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
	uint32_t exp = (u >> 23) & 0xffu;
	uint32_t mant = u & 0x7fffffu;
	int e;

	if (exp == 0xff) {
		if (!mant)
			return sign | 0x7c00u;
		/* NaN: keep the high payload, force quiet so it stays NaN. */
		return (uint16_t)(sign | 0x7e00u | (mant >> 13));
	}
	e = (int)exp - 127 + 15;
	if (e >= 31)
		return sign | 0x7c00u;
	if (e <= 0) {
		/* Result is subnormal (or rounds up to the smallest normal,
		 * which the encoding handles by itself): value in units of
		 * 2^-24 is (1.mant) x 2^(e + 9) = (mant | 2^23) >> (14 - e). */
		unsigned shift = (unsigned)(14 - e);
		if (shift > 24)
			return sign; /* below half the smallest subnormal */
		return (uint16_t)(sign | shift_rne(mant | 0x800000u, shift));
	}
	/* A mantissa carry moves into the exponent; from e == 30 it gives inf. */
	return (uint16_t)(sign | shift_rne(((uint32_t)e << 23) | mant, 13));
}

static uint16_t load_u16(const unsigned char *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static void store_u16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

/* Tensor views point into mappings at any offset, so every load and store
 * goes through bytes or memcpy: no alignment is assumed. */
int gm_dtype_to_f32(enum gm_dtype t, const void *src, float *dst, size_t n, gm_error *err)
{
	const unsigned char *s = src;
	size_t i;

	switch (t) {
	case GM_DTYPE_F32:
		if (n)
			memmove(dst, src, n * sizeof(float));
		return 0;
	case GM_DTYPE_F16:
		for (i = 0; i < n; i++)
			dst[i] = gm_f16_to_f32(load_u16(s + 2 * i));
		return 0;
	case GM_DTYPE_BF16:
		for (i = 0; i < n; i++)
			dst[i] = gm_bf16_to_f32(load_u16(s + 2 * i));
		return 0;
	case GM_DTYPE_F64:
		for (i = 0; i < n; i++) {
			double d;
			memcpy(&d, s + 8 * i, sizeof(d));
			dst[i] = (float)d;
		}
		return 0;
	default:
		return gm_error_set(err, GM_EUNSUPPORTED, "cannot convert %s values to f32", gm_dtype_name(t));
	}
}

int gm_dtype_from_f32(enum gm_dtype t, const float *src, void *dst, size_t n, gm_error *err)
{
	unsigned char *d = dst;
	size_t i;

	switch (t) {
	case GM_DTYPE_F32:
		if (n)
			memmove(dst, src, n * sizeof(float));
		return 0;
	case GM_DTYPE_F16:
		for (i = 0; i < n; i++)
			store_u16(d + 2 * i, gm_f32_to_f16(src[i]));
		return 0;
	case GM_DTYPE_BF16:
		for (i = 0; i < n; i++)
			store_u16(d + 2 * i, gm_f32_to_bf16(src[i]));
		return 0;
	case GM_DTYPE_F64:
		for (i = 0; i < n; i++) {
			double v = src[i];
			memcpy(d + 8 * i, &v, sizeof(v));
		}
		return 0;
	default:
		return gm_error_set(err, GM_EUNSUPPORTED, "cannot convert f32 values to %s", gm_dtype_name(t));
	}
}

void gm_dtype_mix_name(const uint64_t numel[GM_DTYPE_COUNT], char *out, size_t n)
{
	int done[GM_DTYPE_COUNT] = { 0 };
	size_t len = 0;
	int t, best;

	if (!n)
		return;
	out[0] = '\0';
	for (;;) {
		const char *p;

		best = -1;
		for (t = 0; t < GM_DTYPE_COUNT; t++)
			if (numel[t] && !done[t] && (best < 0 || numel[t] > numel[best]))
				best = t;
		if (best < 0)
			break;
		done[best] = 1;
		if (len && len + 1 < n)
			out[len++] = '+';
		for (p = gm_dtype_name((enum gm_dtype)best); *p && len + 1 < n; p++)
			out[len++] = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
		out[len] = '\0';
	}
	if (!len)
		snprintf(out, n, "none");
}
