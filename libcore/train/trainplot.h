/*
 * trainplot.h - a training run's loss curve: the per-step trace kept next
 * to the adapter, its SVG plot, and a terminal sparkline.
 *
 * The trace (GM_TRAINLOG_FILE) has one JSON object per line, in step
 * order:
 *
 *   {"step": 3, "loss": 2.75}            the training loss of step 3 (1-based:
 *                                        the loss of the 3rd optimizer step)
 *   {"step": 4, "eval_loss": 2.9}        the held-out loss after 4 steps (0:
 *                                        before the first)
 *
 * (other keys are ignored when read, so more may be added).  The plot
 * (GM_TRAINPLOT_FILE) is a standalone SVG 1.1 document with both curves on
 * one pair of axes; git web views show it, and the model card (modelcard.h)
 * embeds it.
 */
#ifndef GM_TRAINPLOT_H
#define GM_TRAINPLOT_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/error.h"

#define GM_TRAINLOG_FILE "training_loss.jsonl"
#define GM_TRAINPLOT_FILE "training_loss.svg"

typedef struct gm_trainlog_point {
	int64_t step;
	double value;
} gm_trainlog_point;

typedef struct gm_trainlog {
	gm_trainlog_point *loss;   /* [n_loss], by step */
	size_t n_loss, cap_loss;
	gm_trainlog_point *eval;   /* [n_eval], by step */
	size_t n_eval, cap_eval;
} gm_trainlog;

#define GM_TRAINLOG_INIT { NULL, 0, 0, NULL, 0, 0 }

void gm_trainlog_release(gm_trainlog *l);
void gm_trainlog_add_loss(gm_trainlog *l, int64_t step, double loss);
void gm_trainlog_add_eval(gm_trainlog *l, int64_t step, double eval_loss);
/* Drops the points after step (a run resumed from a checkpoint of that step). */
void gm_trainlog_truncate(gm_trainlog *l, int64_t step);

/* Reads a trace (appending to l); GM_EFORMAT "FILE:LINE: reason" for a bad line. */
int gm_trainlog_load(const char *path, gm_trainlog *l, gm_error *err);
/* Writes the trace to path, atomically. */
int gm_trainlog_save(const gm_trainlog *l, const char *path, gm_error *err);

/* The plot as an SVG document (title: shown above it, may be NULL). */
void gm_trainlog_svg(const gm_trainlog *l, const char *title, gm_buf *out);
/* Writes the plot to path, atomically. */
int gm_trainlog_save_svg(const gm_trainlog *l, const char *title, const char *path, gm_error *err);

/*
 * v[0..n) as at most width block characters (U+2581..U+2588, UTF-8), each
 * the mean of its share of the values, lowest at the bottom.  Nothing for
 * n == 0.
 */
void gm_sparkline(const double *v, size_t n, int width, gm_buf *out);

#endif
