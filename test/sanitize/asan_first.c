/*
 * asan_first.c: preloaded after the ASan runtime by test/sanitize.sh.
 *
 * A preloaded ASan runtime initialises itself lazily, at the first malloc.
 * In Debian 12's postgres that first malloc comes from libgpg-error's
 * constructor inside bindtextdomain(), with glibc's gettext lock held; the
 * runtime's initialisation calls dlerror() -> dcgettext(), which takes the
 * same lock, and the process hangs before main().  Built with
 * -Wl,-z,initfirst, this library's constructor runs before every other one,
 * and its malloc initialises the runtime while no lock is held.
 */
#include <stdlib.h>

__attribute__((constructor)) static void
asan_first(void)
{
	void	   *volatile p = malloc(1);

	free(p);
}
