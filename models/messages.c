/* The encoder's messages, summed on each edge's centre atom: the per-edge tensor product of
 * models/equivariant.py (EdgeTensorProduct, "uvu") with its Clebsch-Gordan couplings written out as the few
 * non-zero terms they have (9 % of the middle layer's dense coupling matrices), the radial weights applied, and
 * the sum over neighbours, in one pass over the edges with no message stored.
 *
 * Built and called by models/native.py (ctypes; no Python or torch headers), which also makes the tables and
 * the layouts:
 *   x     (n_atoms, x_width)   the layer's node features, per input block component-major (component i, channel u)
 *   sh    (n_edges, n_sh)      the edges' spherical harmonics
 *   w     (n_edges, w_width)   the edges' path weights, per block path-major (path p, channel u)
 *   out   (n_atoms, out_width) summed messages, per block component-major (output column c, channel u); added to
 *   column[5 * c + 0..4]       per output column group: channels, offset in w, offset in out, first term, terms
 *   term_x, term_sh, term_v    per term: offset in x (block start + i * channels), harmonic, coupling value
 * For each edge e and column group c, for every channel u:
 *   out[src[e], o + u] += w[e, p + u] * sum over terms t of (v_t * sh[e, j_t]) * x[dst[e], x_t + u]
 * with the terms added in the order of the table (the same order for every edge and every run).
 * Returns 0, or 1 (without writing anything) when an index is outside [0, n_atoms).
 */
#include <stdint.h>

#define MAX_CHANNELS 64

#define COLUMN_GROUP(MUL)                                                  \
    do {                                                                   \
        float acc[MUL];                                                    \
        for (int u = 0; u < (MUL); u++) acc[u] = 0.0f;                     \
        for (int32_t t = col[3]; t < col[3] + col[4]; t++) {               \
            const float s = term_v[t] * sr[term_sh[t]];                    \
            const float *xp = xr + term_x[t];                              \
            for (int u = 0; u < (MUL); u++) acc[u] += s * xp[u];           \
        }                                                                  \
        const float *wp = wr + col[1];                                     \
        float *op = orow + col[2];                                         \
        for (int u = 0; u < (MUL); u++) op[u] += acc[u] * wp[u];           \
    } while (0)

int add_messages(int64_t n_edges, const int64_t *src, const int64_t *dst, int64_t n_atoms,
                 const float *x, int64_t x_width, const float *sh, int64_t n_sh,
                 const float *w, int64_t w_width, float *out, int64_t out_width,
                 int64_t n_columns, const int32_t *column,
                 const int32_t *term_x, const int32_t *term_sh, const float *term_v)
{
    for (int64_t e = 0; e < n_edges; e++) {
        if (src[e] < 0 || src[e] >= n_atoms || dst[e] < 0 || dst[e] >= n_atoms) return 1;
    }
    for (int64_t e = 0; e < n_edges; e++) {
        const float *xr = x + dst[e] * x_width;
        const float *sr = sh + e * n_sh;
        const float *wr = w + e * w_width;
        float *orow = out + src[e] * out_width;
        for (int64_t c = 0; c < n_columns; c++) {
            const int32_t *col = column + 5 * c;
            switch (col[0]) { /* the usual channel counts get loops of a known length */
            case 4: COLUMN_GROUP(4); break;
            case 8: COLUMN_GROUP(8); break;
            case 16: COLUMN_GROUP(16); break;
            default: {
                const int mul = col[0] < MAX_CHANNELS ? col[0] : MAX_CHANNELS;
                float acc[MAX_CHANNELS];
                for (int u = 0; u < mul; u++) acc[u] = 0.0f;
                for (int32_t t = col[3]; t < col[3] + col[4]; t++) {
                    const float s = term_v[t] * sr[term_sh[t]];
                    const float *xp = xr + term_x[t];
                    for (int u = 0; u < mul; u++) acc[u] += s * xp[u];
                }
                const float *wp = wr + col[1];
                float *op = orow + col[2];
                for (int u = 0; u < mul; u++) op[u] += acc[u] * wp[u];
            }
            }
        }
    }
    return 0;
}
