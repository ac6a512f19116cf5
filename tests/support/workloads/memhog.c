/*
 * memhog: touch memory 1 MiB at a time until the kernel OOM-kills us (the probe tests run
 * it under a small memory limit). Exits 3 if it ever reaches 4 GiB without being killed.
 */
#include <stdlib.h>
#include <string.h>

int main(void)
{
    for (int i = 0; i < 4096; i++) {
        char *chunk = malloc(1 << 20);
        if (!chunk)
            return 4;
        memset(chunk, i & 0xff, 1 << 20);  /* touch every page so it is really charged */
    }
    return 3;
}
