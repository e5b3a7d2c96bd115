// Included first by every agent/kernel/ header. The pure layers (model, diagnose, tracker, live,
// render, exporters and their unit tests) are compiled with PORTLENS_PURE_LAYER: code there that
// needs the kernel goes behind one of live/'s interfaces instead (cmake/Layers.cmake).
#pragma once

#ifdef PORTLENS_PURE_LAYER
#error "a pure layer includes an agent/kernel/ header; use an interface from agent/live/ instead"
#endif
