/*
 * report.c - the STATS text of the fronts (see pt_report.h).
 */
#include "pt_report.h"
#include "pt_lanes.h"
#include "pt_stats.h"
#include "pt_text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t pt_report_stats(char *buf, size_t len)
{
    pt_text t;

    pt_text_init(&t, buf, len);
    pt_text_put(&t, "pipetls.stats 1\n");
    pt_lanes_format_config(&t);
    pt_stats_format(&t, pt_lanes_get_threads());
    return t.off;
}

void pt_report_stats_to(const char *dest)
{
    size_t need;
    char *t;
    FILE *fp;

    if (dest == NULL || *dest == '\0')
        return;
    need = pt_report_stats(NULL, 0);
    if ((t = malloc(need + 1)) == NULL)
        return;
    pt_report_stats(t, need + 1);
    if (strcmp(dest, "-") == 0 || strcmp(dest, "stderr") == 0) {
        fputs(t, stderr);
    } else if ((fp = fopen(dest, "a")) != NULL) {
        fputs(t, fp);
        fclose(fp);
    }
    free(t);
}
