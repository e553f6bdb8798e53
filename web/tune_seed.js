// VRWKV Tune On Video's seed has no "control after generate" widget (the frontend defaults
// it to randomize, which re-tunes on every queue). Workflows saved while it had one carry
// that widget's value right after the seed: drop it on load, so every later value lands on
// its own widget.
import { app } from "../../scripts/app.js";

const CONTROL_VALUES = ["fixed", "increment", "decrement", "randomize"];

app.registerExtension({
  name: "VRWKVEditor.TuneSeedWithoutControl",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "VRWKVTuneOnVideo") return;
    const configure = nodeType.prototype.configure;
    nodeType.prototype.configure = function (data) {
      const values = data?.widgets_values;
      const seed = (this.widgets ?? []).findIndex((w) => w.name === "seed");
      if (Array.isArray(values) && seed >= 0 && values.length === this.widgets.length + 1 &&
          CONTROL_VALUES.includes(values[seed + 1])) {
        data = { ...data, widgets_values: values.filter((_, i) => i !== seed + 1) };
      }
      return configure.call(this, data);
    };
  },
});
