/* data.h - images, tokenizers, HDF5 datasets, the loader, `vlm prepare`. */
#ifndef VLM_DATA_H
#define VLM_DATA_H

#include "autograd.h"

/* ---- images ------------------------------------------------------------------ */

/* ---- tokenizers ---------------------------------------------------------------- */

/* ---- HDF5 datasets ----------------------------------------------------------------- */

/* ---- subcommands ------------------------------------------------------------------- */

#endif
