/*
 * pt_report.h - the STATS text every front offers (engine: the STATS
 * control command; provider: the "stats" parameter), and its copy written
 * when a front is unloaded ($PIPETLS_STATS, the engine's STATS_FILE).
 */
#ifndef PT_REPORT_H
#define PT_REPORT_H

#include "pt_base.h"

/* "pipetls.stats 1", the lane configuration, the counters (pt_stats.h),
 * truncated to buf (may be NULL); returns the full length. */
size_t pt_report_stats(char *buf, size_t len);
/* Appends the text to the file dest ("-" or "stderr": standard error);
 * nothing when dest is NULL or empty. */
void pt_report_stats_to(const char *dest);

#endif
