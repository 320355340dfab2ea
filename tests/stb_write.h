/* stb_image_write for the tests that write image files (PNG/JPEG fixtures),
 * compiled into the including file with stb's warnings silenced. Include it
 * once per executable. */
#ifndef VLM_TESTS_STB_WRITE_H
#define VLM_TESTS_STB_WRITE_H

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
/* see data/image.c: stb's JPEG bit writer shifts a signed int too far */
static void stbiw__jpg_writeBits() __attribute__((no_sanitize("shift")));
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

#endif
