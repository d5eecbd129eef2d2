/* trainplot.c - the loss trace, its SVG plot and sparkline (see trainplot.h). */
#include "train/trainplot.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "base/fs.h"
#include "base/json.h"

void gm_trainlog_release(gm_trainlog *l)
{
	free(l->loss);
	free(l->eval);
	memset(l, 0, sizeof(*l));
}

static void add(gm_trainlog_point **v, size_t *n, size_t *cap, int64_t step, double value)
{
	if (*n == *cap) {
		*cap = *cap ? 2 * *cap : 64;
		*v = gm_xrealloc(*v, *cap * sizeof(**v));
	}
	(*v)[*n].step = step;
	(*v)[*n].value = value;
	(*n)++;
}

void gm_trainlog_add_loss(gm_trainlog *l, int64_t step, double loss)
{
	add(&l->loss, &l->n_loss, &l->cap_loss, step, loss);
}

void gm_trainlog_add_eval(gm_trainlog *l, int64_t step, double eval_loss)
{
	add(&l->eval, &l->n_eval, &l->cap_eval, step, eval_loss);
}

void gm_trainlog_truncate(gm_trainlog *l, int64_t step)
{
	while (l->n_loss && l->loss[l->n_loss - 1].step > step)
		l->n_loss--;
	while (l->n_eval && l->eval[l->n_eval - 1].step > step)
		l->n_eval--;
}

int gm_trainlog_load(const char *path, gm_trainlog *l, gm_error *err)
{
	gm_buf text = GM_BUF_INIT;
	char *line, *next;
	unsigned long lineno = 0;
	int ret;

	if ((ret = gm_read_file(path, &text, err)))
		return ret;
	for (line = text.buf; line && *line; line = next) {
		json_object *o = NULL;
		int64_t step;
		double v;
		size_t len;

		next = strchr(line, '\n');
		len = next ? (size_t)(next - line) : strlen(line);
		if (next)
			next++;
		lineno++;
		if (!len)
			continue;
		if (gm_json_parse(line, len, path, &o, err) || !json_object_is_type(o, json_type_object) ||
		    gm_json_get_int64(o, "step", path, &step, err)) {
			json_object_put(o);
			ret = gm_error_set(err, GM_EFORMAT, "%s:%lu: not a trace line {\"step\": N, \"loss\" or "
					   "\"eval_loss\": X}", path, lineno);
			break;
		}
		if (!gm_json_get_double(o, "loss", path, &v, err))
			gm_trainlog_add_loss(l, step, v);
		else if (!gm_json_get_double(o, "eval_loss", path, &v, err))
			gm_trainlog_add_eval(l, step, v);
		json_object_put(o);
	}
	gm_buf_release(&text);
	return ret;
}

/* Numbers as %.9g, with NAN and infinities (a diverged run) as JSON null. */
static void add_number(gm_buf *b, double v)
{
	if (isfinite(v))
		gm_buf_addf(b, "%.9g", v);
	else
		gm_buf_adds(b, "null");
}

int gm_trainlog_save(const gm_trainlog *l, const char *path, gm_error *err)
{
	gm_buf b = GM_BUF_INIT;
	size_t i = 0, k = 0;
	int ret;

	/* merged by step, an evaluation before the step of the same number
	 * (eval at N is taken after N steps, before step N + 1) */
	while (i < l->n_loss || k < l->n_eval) {
		if (k < l->n_eval && (i == l->n_loss || l->eval[k].step < l->loss[i].step)) {
			gm_buf_addf(&b, "{\"step\": %lld, \"eval_loss\": ", (long long)l->eval[k].step);
			add_number(&b, l->eval[k++].value);
		} else {
			gm_buf_addf(&b, "{\"step\": %lld, \"loss\": ", (long long)l->loss[i].step);
			add_number(&b, l->loss[i++].value);
		}
		gm_buf_adds(&b, "}\n");
	}
	ret = gm_write_file_atomic(path, b.buf ? b.buf : "", b.len, 0666, err);
	gm_buf_release(&b);
	return ret;
}

/* ---------------------------------------------------------------- SVG */

#define W 640
#define H 360
#define ML 64   /* margins: room for the tick labels */
#define MR 16
#define MT 36
#define MB 44

static void range(const gm_trainlog_point *v, size_t n, double *lo, double *hi, int64_t *s0, int64_t *s1)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (isfinite(v[i].value)) {
			*lo = fmin(*lo, v[i].value);
			*hi = fmax(*hi, v[i].value);
		}
		*s0 = v[i].step < *s0 ? v[i].step : *s0;
		*s1 = v[i].step > *s1 ? v[i].step : *s1;
	}
}

/* A tick spacing of 1, 2 or 5 times a power of ten, giving about n ticks over span. */
static double nice_step(double span, int n)
{
	double raw = span / n, p = pow(10, floor(log10(raw))), f = raw / p;

	return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static void add_escaped(gm_buf *b, const char *s)
{
	for (; *s; s++) {
		if (*s == '<')
			gm_buf_adds(b, "&lt;");
		else if (*s == '>')
			gm_buf_adds(b, "&gt;");
		else if (*s == '&')
			gm_buf_adds(b, "&amp;");
		else if (*s == '"')
			gm_buf_adds(b, "&quot;");
		else
			gm_buf_addch(b, *s);
	}
}

static void polyline(gm_buf *b, const gm_trainlog_point *v, size_t n, double x0, double xs, double y0,
		     double ys, int64_t s0, double lo, const char *color, const char *extra)
{
	size_t i;
	int open = 0;

	for (i = 0; i < n; i++) {
		double x, y;

		if (!isfinite(v[i].value)) {
			if (open)
				gm_buf_adds(b, "\"/>\n");
			open = 0;
			continue;
		}
		x = x0 + xs * (double)(v[i].step - s0);
		y = y0 - ys * (v[i].value - lo);
		if (!open)
			gm_buf_addf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\"%s points=\"", color,
				    extra);
		gm_buf_addf(b, "%s%.1f,%.1f", open ? " " : "", x, y);
		open = 1;
	}
	if (open)
		gm_buf_adds(b, "\"/>\n");
	/* single points (an eval at one step) are otherwise invisible */
	for (i = 0; i < n && n <= 64; i++)
		if (isfinite(v[i].value))
			gm_buf_addf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n",
				    x0 + xs * (double)(v[i].step - s0), y0 - ys * (v[i].value - lo), color);
}

void gm_trainlog_svg(const gm_trainlog *l, const char *title, gm_buf *out)
{
	double lo = INFINITY, hi = -INFINITY, xs, ys, t, dy;
	int64_t s0 = INT64_MAX, s1 = INT64_MIN, ds;
	double pw = W - ML - MR, ph = H - MT - MB, x0 = ML, y0 = H - MB;

	range(l->loss, l->n_loss, &lo, &hi, &s0, &s1);
	range(l->eval, l->n_eval, &lo, &hi, &s0, &s1);
	if (!isfinite(lo)) {
		lo = 0;
		hi = 1;
	}
	if (s0 > s1)
		s0 = s1 = 0;
	if (hi - lo < 1e-9) {
		lo -= 0.5;
		hi += 0.5;
	}
	/* some air above and below the curves */
	dy = nice_step(hi - lo, 5);
	lo = floor(lo / dy) * dy;
	hi = ceil(hi / dy) * dy;
	xs = pw / (double)(s1 > s0 ? s1 - s0 : 1);
	ys = ph / (hi - lo);
	gm_buf_addf(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		    "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\" height=\"%d\" "
		    "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H, W, H);
	gm_buf_addf(out, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
	if (title) {
		gm_buf_addf(out, "<text x=\"%d\" y=\"20\" font-size=\"14\">", ML);
		add_escaped(out, title);
		gm_buf_adds(out, "</text>\n");
	}
	/* grid and labels */
	for (t = lo; t <= hi + dy / 2; t += dy) {
		double y = y0 - ys * (t - lo);

		gm_buf_addf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", x0, y,
			    x0 + pw, y);
		gm_buf_addf(out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.4g</text>\n", x0 - 6, y + 4, t);
	}
	ds = (int64_t)ceil(nice_step((double)(s1 > s0 ? s1 - s0 : 1), 6));
	if (ds < 1)
		ds = 1;
	for (int64_t s = (s0 + ds - 1) / ds * ds; s <= s1; s += ds) {
		double x = x0 + xs * (double)(s - s0);

		gm_buf_addf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>\n", x, y0, x,
			    y0 - ph);
		gm_buf_addf(out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%lld</text>\n", x, y0 + 16,
			    (long long)s);
	}
	gm_buf_addf(out, "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#888\"/>\n",
		    x0, MT, pw, ph);
	gm_buf_addf(out, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">step</text>\n", x0 + pw / 2, H - 8);
	polyline(out, l->loss, l->n_loss, x0, xs, y0, ys, s0, lo, "#1f77b4", "");
	polyline(out, l->eval, l->n_eval, x0, xs, y0, ys, s0, lo, "#d62728", " stroke-dasharray=\"5,3\"");
	/* legend */
	gm_buf_addf(out, "<line x1=\"%d\" y1=\"26\" x2=\"%d\" y2=\"26\" stroke=\"#1f77b4\" stroke-width=\"2\"/>"
		    "<text x=\"%d\" y=\"30\">training loss</text>\n", W - 250, W - 230, W - 225);
	if (l->n_eval)
		gm_buf_addf(out, "<line x1=\"%d\" y1=\"26\" x2=\"%d\" y2=\"26\" stroke=\"#d62728\" stroke-width=\"2\" "
			    "stroke-dasharray=\"5,3\"/><text x=\"%d\" y=\"30\">eval loss</text>\n",
			    W - 120, W - 100, W - 95);
	gm_buf_adds(out, "</svg>\n");
}

int gm_trainlog_save_svg(const gm_trainlog *l, const char *title, const char *path, gm_error *err)
{
	gm_buf b = GM_BUF_INIT;
	int ret;

	gm_trainlog_svg(l, title, &b);
	ret = gm_write_file_atomic(path, b.buf, b.len, 0666, err);
	gm_buf_release(&b);
	return ret;
}

/* ---------------------------------------------------------------- sparkline */

void gm_sparkline(const double *v, size_t n, int width, gm_buf *out)
{
	static const char *const blocks[8] = { "\u2581", "\u2582", "\u2583", "\u2584",
					       "\u2585", "\u2586", "\u2587", "\u2588" };
	double lo = INFINITY, hi = -INFINITY, *col;
	size_t cols, c, i;

	if (!n || width < 1)
		return;
	cols = n < (size_t)width ? n : (size_t)width;
	col = gm_xcalloc(cols, sizeof(*col));
	for (c = 0; c < cols; c++) {
		/* values [c*n/cols, (c+1)*n/cols): every value in exactly one column */
		size_t a = c * n / cols, b = (c + 1) * n / cols, k = 0;
		double sum = 0;

		for (i = a; i < b; i++)
			if (isfinite(v[i])) {
				sum += v[i];
				k++;
			}
		col[c] = k ? sum / (double)k : NAN;
		if (k) {
			lo = fmin(lo, col[c]);
			hi = fmax(hi, col[c]);
		}
	}
	for (c = 0; c < cols; c++) {
		int level;

		if (!isfinite(col[c])) {
			gm_buf_addch(out, ' ');
			continue;
		}
		level = hi > lo ? (int)floor((col[c] - lo) / (hi - lo) * 7.999) : 3;
		gm_buf_adds(out, blocks[level < 0 ? 0 : level > 7 ? 7 : level]);
	}
	free(col);
}
