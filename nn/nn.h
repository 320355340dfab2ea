/* nn.h - layers, models with Hugging Face parameter names, safetensors I/O. */
#ifndef VLM_NN_H
#define VLM_NN_H

#include "autograd.h"

/* ---- safetensors --------------------------------------------------------- */

/* ---- subcommands ------------------------------------------------------------ */

#endif
