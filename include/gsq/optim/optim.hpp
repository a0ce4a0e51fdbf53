// gsq/optim/optim.hpp — everything in gsq::optim: AdamW, SGD, clipping, schedules, state.
#pragma once

#include "gsq/optim/adamw.hpp"
#include "gsq/optim/clip.hpp"
#include "gsq/optim/optimizer.hpp"
#include "gsq/optim/schedule.hpp"
#include "gsq/optim/sgd.hpp"
#include "gsq/optim/state.hpp"

